"""Editing text in the operator's editor ($VISUAL, $EDITOR, else `editor` or `vi`)."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping

from pgwarden.ctl.errors import CtlError, UsageError


def find_editor(env: Mapping[str, str]) -> list[str]:
    for var in ("VISUAL", "EDITOR"):
        if env.get(var):
            # "code --wait" or "emacs -nw" are common values: split like a shell would
            return shlex.split(env[var])
    for name in ("editor", "vi"):
        path = shutil.which(name)
        if path:
            return [path]
    raise UsageError("no editor found: set the EDITOR environment variable (or use --set, --pg or --apply)")


def edit_text(text: str, name: str, env: Mapping[str, str] | None = None) -> str:
    """Let the operator edit `text` in a temporary .yaml file; the edited text."""
    environ = os.environ if env is None else env
    command = find_editor(environ)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix=f"{safe}-config-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            status = subprocess.call([*command, path])
        except OSError as e:
            raise UsageError(f"cannot start the editor {command[0]!r}: {e.strerror or e}") from None
        if status != 0:
            raise CtlError(f"the editor {command[0]!r} exited with status {status}: nothing changed")
        with open(path, encoding="utf-8") as f:
            return f.read()
    finally:
        os.unlink(path)
