"""pg_hba.conf from the configured lines, with a safe loopback-only default."""
from __future__ import annotations

import os
from collections.abc import Sequence

from pgwarden.postgres import runas

HBA_HEADER = (
    "# Written by pgwarden from postgresql.pg_hba; rewritten on every reconfiguration.\n"
)


def default_hba_lines(password_auth: bool) -> list[str]:
    """Local socket and loopback only, for normal sessions and replication.

    With passwords configured, scram-sha-256 everywhere; without any, trust (the only way a
    password-less superuser can connect, as initdb's own default).
    """
    method = "scram-sha-256" if password_auth else "trust"
    return [
        f"local   all           all                    {method}",
        f"host    all           all    127.0.0.1/32    {method}",
        f"host    all           all    ::1/128         {method}",
        f"local   replication   all                    {method}",
        f"host    replication   all    127.0.0.1/32    {method}",
        f"host    replication   all    ::1/128         {method}",
    ]


def render_pg_hba(lines: Sequence[str], password_auth: bool = True) -> str:
    """The file's text: the configured lines, or the default when none are configured."""
    body = [ln.strip() for ln in lines if ln.strip()] or default_hba_lines(password_auth)
    return HBA_HEADER + "\n".join(body) + "\n"


def write_pg_hba(data_dir: str, lines: Sequence[str], password_auth: bool = True) -> bool:
    """Write pg_hba.conf; True if it changed (a reload applies it, never a restart)."""
    return runas.write_db_file(
        os.path.join(data_dir, "pg_hba.conf"), render_pg_hba(lines, password_auth)
    )
