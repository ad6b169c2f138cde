"""``python -m tnborn``: the command line (see :mod:`tnborn.cli`)."""

import sys

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
