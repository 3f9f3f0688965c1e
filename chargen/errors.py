"""The one exception type for mistakes a user can fix.

The command line prints a `UserError` as one line on stderr and exits 1; every other
exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, options or files: the message says what to do."""


def first_line(error: BaseException, limit: int = 120) -> str:
    """An exception's first message line (its type name when it has no message), cut to `limit` characters.

    For quoting a library's error inside a one-line UserError; some errors (EOFError) have no message.
    """
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    if len(line) > limit:  # end at a sentence when one ends in time, else mark the cut
        end = line.rfind(". ", 0, limit)
        line = line[:end + 1] if end > 0 else line[:limit - 1] + "…"
    return line
