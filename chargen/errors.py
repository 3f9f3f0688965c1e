"""The one exception type for mistakes a user can fix.

The command line prints a `UserError` as one line on stderr and exits 1; every other
exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, options or files: the message says what to do."""
