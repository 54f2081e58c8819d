"""What a data directory holds, read without a running server."""
from __future__ import annotations

import os
import shutil
from typing import Literal

from pgwarden.core.errors import PostgresError
from pgwarden.postgres import runas

DataDirState = Literal["empty", "initialized", "invalid"]


def data_dir_state(data_dir: str) -> DataDirState:
    """'empty' (missing or no entries), 'initialized' (PG_VERSION and global/pg_control),
    or 'invalid' (anything else: a half-done initdb/basebackup, a stranger's files, unreadable).

    'invalid' is deliberately never treated as empty: only an operator (or our own cleanup of
    a copy we started) may remove files from a data dir.
    """
    try:
        entries = os.listdir(data_dir)
    except FileNotFoundError:
        return "empty"
    except OSError:
        return "invalid"
    if not entries:
        return "empty"
    if os.path.isfile(os.path.join(data_dir, "PG_VERSION")) and os.path.isfile(
        os.path.join(data_dir, "global", "pg_control")
    ):
        return "initialized"
    return "invalid"


def major_version(data_dir: str) -> int | None:
    """The major version in PG_VERSION (e.g. 15), or None when absent or unreadable."""
    try:
        with open(os.path.join(data_dir, "PG_VERSION"), encoding="ascii") as f:
            return int(f.read().strip().split(".")[0])
    except (OSError, ValueError):
        return None


def controldata(bin_dir: str, data_dir: str, timeout: float = 10.0) -> dict[str, str]:
    """pg_controldata's output as {label: value}, e.g. 'Database cluster state': 'shut down'.

    Runs as the database user (pg_control is mode 0600) with LC_ALL=C so the labels are the
    English ones we parse, whatever the server's locale.
    """
    result = runas.run(
        [os.path.join(bin_dir, "pg_controldata"), "-D", data_dir],
        timeout,
        env=runas.db_env({"LC_ALL": "C", "LANG": "C"}),
        what="pg_controldata",
    )
    return parse_controldata(result.stdout)


def parse_controldata(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        if sep:
            values[label.strip()] = value.strip()
    return values


def read_sysid(bin_dir: str, data_dir: str, timeout: float = 10.0) -> str:
    """The database system identifier as a string (Patroni's `database_system_identifier`)."""
    sysid = controldata(bin_dir, data_dir, timeout).get("Database system identifier")
    if not sysid:
        raise PostgresError(f"pg_controldata printed no system identifier for {data_dir}")
    return sysid


def clear_data_dir(data_dir: str, remove_dir: bool) -> None:
    """Remove what a failed initdb/basebackup of OURS left behind (never call it on a data
    dir that held anything before that operation began): the whole dir if we created it,
    else only its contents, so a dir an operator prepared keeps its owner and mode."""
    if remove_dir:
        shutil.rmtree(data_dir, ignore_errors=True)
        return
    for name in os.listdir(data_dir) if os.path.isdir(data_dir) else []:
        path = os.path.join(data_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
