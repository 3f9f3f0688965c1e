"""`python cli.py <command>` from a clone: the chargen command line (chargen/cli.py).

The same as `chargen <command>` once installed and `python -m chargen <command>`.
"""
import sys

from chargen.cli import main

if __name__ == "__main__":
    sys.exit(main())
