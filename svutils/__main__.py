"""Entry point of `python -m svutils` (see svutils.runner)."""

import sys

from svutils.runner import main

if __name__ == "__main__":
    sys.exit(main())
