"""Installing and deploying as users do: the torch installer, the image's check (``python -m deploy.docker_check``)
and the page walk it shares with the browser tests. Imports ``app`` and ``precompute``; nothing imports it but tests."""
