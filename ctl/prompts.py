"""Questions to the operator; `--force` answers yes to all of them.

Answers are read from stdin line by line, so scripts may pipe them in. When stdin ends
before an answer, the command stops with a sentence saying to pass --force (or to pipe
the answer), instead of hanging or assuming anything.
"""
from __future__ import annotations

from typing import TextIO

from pgwarden.ctl.errors import CtlError


class Prompter:
    def __init__(self, stdin: TextIO, out: TextIO, force: bool = False) -> None:
        self.stdin = stdin
        self.out = out
        self.force = force

    def _read(self, question: str) -> str:
        self.out.flush()
        line = self.stdin.readline()
        if not line:
            self.out.write("\n")
            raise CtlError(f"no answer to {question!r} (stdin is closed): "
                           "pass --force to run without questions, or pipe the answer in")
        return line.rstrip("\r\n")

    def confirm(self, question: str) -> bool:
        """Yes or no, no by default. Always yes with --force."""
        if self.force:
            return True
        self.out.write(f"{question} [y/N]: ")
        return self._read(question).strip().lower() in ("y", "yes")

    def ask(self, question: str, default: str | None = None) -> str:
        """A free-text answer (asked even with --force: used where a typed name is the safeguard)."""
        suffix = f" [{default}]" if default else ""
        self.out.write(f"{question}{suffix}: ")
        answer = self._read(question).strip()
        return answer or (default or "")
