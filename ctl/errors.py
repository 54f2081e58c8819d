"""What can go wrong in pgwardenctl, each with the exit status a script sees.

Every error carries one sentence for stderr; `main` prints it and exits with `code`.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # understood, but failed, was refused, or the user declined
EXIT_USAGE = 2  # the command line, the config file or an input file is wrong; nothing was done
EXIT_PENDING = 3  # accepted, but still in progress when we stopped waiting (outcome unknown)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class CtlError(Exception):
    """A failure to report as one line on stderr."""

    code = EXIT_FAILED

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(" ".join(message.split()))  # always one line
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(CtlError):
    """Bad arguments, config file or input: nothing was done."""

    code = EXIT_USAGE


class Pending(CtlError):
    """The operation was accepted but had not finished when we stopped waiting."""

    code = EXIT_PENDING


class ApiUnreachable(CtlError):
    """A member's REST API did not answer (refused, timed out, TLS failure)."""
