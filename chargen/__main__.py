"""`python -m chargen`: the same command line as `chargen` (and what torchrun runs with -m)."""
import sys

from chargen.cli import main

if __name__ == "__main__":
    sys.exit(main())
