"""Jobs that tie the layers together: the precompute run (``config``, ``pipeline``, ``finish``), the paper
``report``, and the command line (``cli``)."""
