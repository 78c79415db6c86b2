"""``python -m precompute``: see ``precompute.jobs.cli``."""

import os
import sys

# a log that is not a terminal gets no carriage-return progress bars (tqdm reads this when first imported; the
# project's own progress lines are printed whole)
if not sys.stderr.isatty():
    os.environ.setdefault("TQDM_DISABLE", "1")

from .jobs.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
