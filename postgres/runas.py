"""Run PostgreSQL's programs as the database OS user, and hand files over to that user.

PostgreSQL refuses to run as root. When pgwarden runs as root it drops to the `postgres`
account for every PostgreSQL program (initdb, postgres, pg_basebackup, pg_controldata,
pg_rewind); when it already runs as an unprivileged account, that account IS the database
user and programs run as ourselves.
"""
from __future__ import annotations

import os
import pwd
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pgwarden.core.errors import PostgresError

DB_OS_USER = "postgres"  # the account PostgreSQL runs as when we are root


@dataclass(frozen=True)
class DbUser:
    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]
    switch: bool  # True when we are root and must drop to this account


def db_user() -> DbUser:
    """The account PostgreSQL programs run as: `postgres` when we are root, else ourselves."""
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(DB_OS_USER)
        except KeyError:
            raise PostgresError(
                f"we run as root but there is no '{DB_OS_USER}' OS user to run PostgreSQL as: "
                "install PostgreSQL or create the user"
            ) from None
        groups = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
        return DbUser(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, groups, True)
    pw = pwd.getpwuid(os.geteuid())
    return DbUser(pw.pw_name, pw.pw_uid, os.getegid(), pw.pw_dir, tuple(os.getgroups()), False)


def popen_kwargs() -> dict[str, Any]:
    """Keyword arguments for subprocess.Popen that run the child as the database user."""
    user = db_user()
    if not user.switch:
        return {}
    # extra_groups replaces root's supplementary groups: without it the child keeps group 0.
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}


def db_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for PostgreSQL programs.

    Our own PG* variables (PGPASSWORD, PGHOST, ...) must not leak into the programs: every
    connection parameter is passed explicitly. HOME points at the database user's home so a
    root ~/.pgpass is never consulted.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    user = db_user()
    env["HOME"] = user.home
    env["USER"] = env["LOGNAME"] = user.name
    if extra:
        env.update(extra)
    return env


def run(
    cmd: Sequence[str],
    timeout: float | None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
    what: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` as the database user, capture its output, bound it by `timeout` seconds.

    `cwd` defaults to "/" because the database user often cannot enter our working directory
    (initdb warns, postgres fails). On timeout the whole process group is killed: initdb and
    pg_basebackup fork helpers that would otherwise outlive us. With `check`, a non-zero exit
    raises PostgresError carrying the last line of stderr.
    """
    label = what or os.path.basename(cmd[0])
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env) if env is not None else db_env(),
            cwd=cwd,
            start_new_session=True,
            **popen_kwargs(),
        )
    except OSError as e:
        raise PostgresError(f"{label}: cannot run {cmd[0]}: {e.strerror}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise PostgresError(f"{label}: did not finish within {timeout:g} s") from None
    except BaseException:
        _kill_group(proc)
        raise
    result = subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise PostgresError(f"{label} failed (exit {proc.returncode}): {last_line(err or out)}")
    return result


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the process group we created for `proc` (only our own child's group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


_ERROR_MARKS = ("error:", "FATAL:", "PANIC:", "ERROR:")


def last_line(text: str) -> str:
    """The line of a program's output that says what went wrong.

    The last line that reports an error ("pg_basebackup: error: ...", "FATAL:  ..."), not
    merely the last line: libpq appends remarks such as "password retrieved from file" after
    the cause. Falls back to the last non-empty line.
    """
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if any(mark in ln for mark in _ERROR_MARKS)]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "no output"


def chown_to_db(path: str, recursive: bool = False) -> None:
    """Give `path` to the database user (no-op unless we are root)."""
    user = db_user()
    if not user.switch:
        return
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    if recursive and os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)


def make_db_dir(path: str, mode: int = 0o700) -> None:
    """Create `path` (and missing parents) owned by the database user with `mode`.

    Parents we create stay mode 0755 so the database user can traverse them; an existing
    directory is only re-owned and re-moded (PostgreSQL refuses a data dir that is not 0700
    or 0750 and owned by its user).
    """
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
    os.makedirs(path, mode=mode, exist_ok=True)
    os.chmod(path, mode)
    chown_to_db(path)


def write_db_file(path: str, content: str, mode: int = 0o600) -> bool:
    """Atomically write `content` to `path`, owned by the database user. False if unchanged.

    Written through a temporary file in the same directory and renamed, so PostgreSQL (or a
    crash of ours) never sees a half-written configuration file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == content:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pgwarden-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        chown_to_db(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True


def temp_db_file(content: str, directory: str | None = None, prefix: str = ".pgwarden-") -> str:
    """A private temporary file (mode 0600) the database user can read; the caller removes it.

    Used for secrets handed to a PostgreSQL program (initdb --pwfile, a passfile for
    pg_basebackup) so a password never appears on a command line (visible in `ps`).
    `directory` should be one the database user can traverse (the data dir's parent): the
    system temp dir may be private to root (TMPDIR).
    """
    fd, path = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(path, 0o600)
        chown_to_db(path)
    except BaseException:
        os.unlink(path)
        raise
    return path
