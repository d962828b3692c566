"""User-facing errors: the CLI turns these into one line and exit code 2."""


class UserError(ValueError):
    """Bad input or parameters that the user can fix; the message says what and how.

    A `ValueError`, so the Python API raises what Python callers expect for bad arguments."""
