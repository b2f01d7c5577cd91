"""``python -m partitioner``: the command line (see `partitioner.cli`)."""

import sys

from partitioner.cli import main

if __name__ == "__main__":
    sys.exit(main())
