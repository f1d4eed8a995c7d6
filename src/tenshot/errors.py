"""User-facing outcomes: TenshotError (a message, exit status 2, no traceback) and Interrupted (exit 130)."""


class TenshotError(Exception):
    """A failure the user can fix; the CLI prints ``error: <message>`` and exits with status 2."""

    exit_code = 2


def warn(message: str) -> None:
    """One line on stderr, ``warning: <message>``, for what the user should know but need not fix now."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after writing a checkpoint at ``step``."""

    def __init__(self, step: int, path):
        super().__init__(f"interrupted: checkpoint of step {step} written to {path}; continue with --resume")
        self.step = step
