"""The one exception type a user sees: a one-line message that names the problem and the fix; and the
one-line texts made from other exceptions (`first_line`, `os_error_message`)."""

from __future__ import annotations

import errno


class DataprepError(Exception):
    """A user-facing error. The CLI turns it into a click.ClickException: it prints `Error: <message>`
    and exits with status 1, no traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def os_error_message(exc: OSError, writing: str | None = None) -> str:
    """One line for an OS error (a full disk, a file-size limit, a permission, ...), naming the fix;
    `writing`: the output (-o) being written, if any. Without it the error was elsewhere (a temporary
    directory, a cache), so the line names the error's file instead of pointing at -o."""
    where = f" ({exc.filename})" if exc.filename else ""
    target, other_o = (f" while writing {writing}", " or choose another -o") if writing else (where, "")
    if exc.errno == errno.EFBIG:
        return f"a file reached the file-size limit (ulimit -f){target}; raise the limit{other_o}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{target}; free some space{other_o}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "of the input and of -o's parent" if writing else ("of that path" if exc.filename else "of the paths used")
        return f"permission denied{where}; check the permissions {fix}"
    return f"{exc.strerror or first_line(exc)}{where}; check the paths, free space, file-size limits and permissions"
