"""The one exception type a user sees: a one-line message that names the problem and the fix."""


class DataprepError(Exception):
    """A user-facing error. The CLI prints `error: <message>` and exits with status 2, no traceback."""
