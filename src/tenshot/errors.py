"""The one user-facing error type: a message, exit status 2, no traceback."""


class TenshotError(Exception):
    """A failure the user can fix; the CLI prints ``error: <message>`` and exits with status 2."""

    exit_code = 2
