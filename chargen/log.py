"""Diagnostics for the person at the terminal: always stderr, never stdout (stdout is the product)."""
import os
import sys


def info(message: str) -> None:
    """Print one line on stderr without breaking an active tqdm progress bar.

    Under torchrun only rank 0 speaks: the other processes would repeat the same lines.
    """
    if os.environ.get("RANK", "0") != "0" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    if "tqdm" in sys.modules:  # a bar may be on screen: let tqdm move it out of the way
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
