"""`python -m chargen`: the same command line as `python cli.py` (and what torchrun runs with -m)."""
import sys
from pathlib import Path

try:
    from cli import main
except ImportError:  # run from outside a clone with only the package on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cli import main

if __name__ == "__main__":
    sys.exit(main())
