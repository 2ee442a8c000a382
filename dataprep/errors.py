"""The one exception type a user sees: a one-line message that names the problem and the fix."""


class DataprepError(Exception):
    """A user-facing error. The CLI turns it into a click.ClickException: it prints `Error: <message>`
    and exits with status 1, no traceback."""
