"""`python -m dfray …`: the `dfray` command."""

import sys

from dfray.cli import main

if __name__ == "__main__":
    sys.exit(main())
