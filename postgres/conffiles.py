"""postgresql.conf, standby.signal and pg_hba.conf, as pgwarden wants them.

After initdb (or a basebackup) the original postgresql.conf is kept as postgresql.base.conf
and our postgresql.conf includes it, then sets what HA needs and what the user configured.
Every function is idempotent and says whether anything changed and whether a running server
needs a restart (vs a reload) to apply it. Rendering is pure; only `write_*`/`configure`
touch files.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgwarden.core.config_model import PostgresConfig
from pgwarden.core.errors import PostgresError
from pgwarden.postgres import hba, runas

BASE_CONF = "postgresql.base.conf"
CONF = "postgresql.conf"
STANDBY_SIGNAL = "standby.signal"
MARKER = "# Written by pgwarden"
_HEADER = (
    f"{MARKER}: rewritten on every start and reconfiguration; edits here are lost.\n"
    "# Put settings in pgwarden's configuration (postgresql.parameters) instead.\n"
    f"include '{BASE_CONF}'\n\n"
)

# Settings only a restart applies (PostgreSQL 15: SELECT name FROM pg_settings WHERE
# context = 'postmaster'). pg_settings.pending_restart confirms it after a reload.
POSTMASTER_CONTEXT = frozenset(
    ["archive_mode", "autovacuum_freeze_max_age", "autovacuum_max_workers", "autovacuum_multixact_freeze_max_age", "bonjour", "bonjour_name", "cluster_name", "config_file", "data_directory", "data_sync_retry", "dynamic_shared_memory_type", "event_source", "external_pid_file", "hba_file", "hot_standby", "huge_page_size", "huge_pages", "ident_file", "ignore_invalid_pages", "jit_provider", "listen_addresses", "logging_collector", "max_connections", "max_files_per_process", "max_locks_per_transaction", "max_logical_replication_workers", "max_pred_locks_per_transaction", "max_prepared_transactions", "max_replication_slots", "max_wal_senders", "max_worker_processes", "min_dynamic_shared_memory", "old_snapshot_threshold", "port", "recovery_target", "recovery_target_action", "recovery_target_inclusive", "recovery_target_lsn", "recovery_target_name", "recovery_target_time", "recovery_target_timeline", "recovery_target_xid", "shared_buffers", "shared_memory_type", "shared_preload_libraries", "superuser_reserved_connections", "track_activity_query_size", "track_commit_timestamp", "unix_socket_directories", "unix_socket_group", "unix_socket_permissions", "wal_buffers", "wal_decode_buffer_size", "wal_level", "wal_log_hints"]
)

# What HA needs unless the user says otherwise.
DEFAULT_PARAMETERS: dict[str, Any] = {
    "wal_level": "replica",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "128MB",
    "wal_log_hints": "on",  # pg_rewind needs it (or data checksums) after a failover
    # A replica re-pointed at a new primary retries its WAL receiver after this long (5 s by
    # default): with synchronous replication the new primary's first commit waited for it
    # in half the lab's failovers. Retrying every second costs one connection attempt.
    "wal_retrieve_retry_interval": "1s",
}
# Ours alone: a user value is ignored (replication wiring) or cannot be set in this file.
_OWNED = frozenset(
    {"listen_addresses", "port", "primary_conninfo", "primary_slot_name", "hot_standby",
     "data_directory", "config_file"}
)
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path (108) minus the terminating NUL


@dataclass(frozen=True)
class Upstream:
    """The server a replica streams from (becomes primary_conninfo)."""

    host: str
    port: int
    user: str
    application_name: str  # our member name: the primary sees it in pg_stat_replication
    password: str | None = None
    passfile: str | None = None  # preferred over password when given: no secret in the conf
    connect_timeout: int = 5


@dataclass(frozen=True)
class ConfChange:
    changed: bool = False
    restart: bool = False  # a running server needs a restart; otherwise a reload suffices
    params: tuple[str, ...] = field(default=())  # settings (or files) that changed

    def __or__(self, other: ConfChange) -> ConfChange:
        return ConfChange(
            self.changed or other.changed,
            self.restart or other.restart,
            tuple(dict.fromkeys(self.params + other.params)),
        )


# -- pure ------------------------------------------------------------------------------
def default_socket_dir(data_dir: str) -> str:
    """The unix socket directory of an instance: its data dir's parent.

    Per instance (not /var/run/postgresql) so that several instances on one machine, e.g.
    lab hosts sharing a file system, never compete for one socket path; the socket file
    name also carries the port. Never the data dir itself: the socket's lock file would be
    copied by pg_basebackup and block the replica's start.
    """
    return os.path.dirname(os.path.abspath(data_dir).rstrip("/"))


def conninfo_quote(value: str) -> str:
    """A libpq conninfo value: single-quoted, with ' and \\ backslash-escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def primary_conninfo(up: Upstream) -> str:
    items: list[tuple[str, str]] = [
        ("host", up.host),
        ("port", str(up.port)),
        ("user", up.user),
    ]
    if up.passfile:
        items.append(("passfile", up.passfile))
    elif up.password is not None:
        items.append(("password", up.password))
    items += [
        ("application_name", up.application_name),
        ("connect_timeout", str(up.connect_timeout)),
    ]
    return " ".join(f"{k}={conninfo_quote(v)}" for k, v in items)


def format_value(value: Any) -> str:
    """A Python value as PostgreSQL writes settings: booleans on/off, the rest as text."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def quote_conf_value(value: str) -> str:
    """A postgresql.conf string: the GUC lexer turns '' into ' and interprets backslashes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def build_settings(
    *,
    listen_addresses: str,
    port: int,
    socket_dir: str,
    parameters: Mapping[str, Any] | None = None,
    upstream: Upstream | None = None,
    slot: str | None = None,
) -> dict[str, str]:
    """The settings our postgresql.conf sets, in a stable order (pure).

    `upstream` makes it a replica's configuration (primary_conninfo, primary_slot_name);
    a primary gets neither, so a promoted server never keeps streaming wiring around.
    """
    if len(socket_dir) + len("/.s.PGSQL.65535") > _SUN_PATH_MAX:
        raise PostgresError(
            f"unix socket directory {socket_dir} is too long for a socket path "
            f"({_SUN_PATH_MAX} bytes max): use a shorter data dir path"
        )
    user = {k: format_value(v) for k, v in (parameters or {}).items() if k not in _OWNED}
    settings: dict[str, str] = {k: format_value(v) for k, v in DEFAULT_PARAMETERS.items()}
    settings.update(user)
    if settings.get("wal_level") == "minimal":
        settings["wal_level"] = "replica"  # minimal WAL cannot feed a replica
    # Our socket dir first: our own connections use it; the user's extra dirs are kept.
    extra_dirs = [d.strip() for d in user.get("unix_socket_directories", "").split(",")]
    settings["unix_socket_directories"] = ", ".join(
        dict.fromkeys([socket_dir] + [d for d in extra_dirs if d])
    )
    settings["listen_addresses"] = listen_addresses
    settings["port"] = str(port)
    settings["hot_standby"] = "on"  # a replica must answer our status queries
    if upstream is not None:
        settings["primary_conninfo"] = primary_conninfo(upstream)
        if slot:
            settings["primary_slot_name"] = slot
    return dict(sorted(settings.items()))


def render_postgresql_conf(settings: Mapping[str, str]) -> str:
    lines = [f"{name} = {quote_conf_value(value)}" for name, value in settings.items()]
    return _HEADER + "\n".join(lines) + "\n"


def parse_postgresql_conf(text: str) -> dict[str, str] | None:
    """The settings of a file WE rendered; None for any other file (e.g. initdb's)."""
    if not text.startswith(MARKER):
        return None
    settings: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(" = ")
        if sep and rest.startswith("'") and rest.endswith("'") and len(rest) >= 2:
            settings[name] = _unquote_conf_value(rest[1:-1])
    return settings


def _unquote_conf_value(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c in ("'", "\\") and i + 1 < len(body) and body[i + 1] == c:
            out.append(c)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def diff_settings(old: Mapping[str, str] | None, new: Mapping[str, str]) -> ConfChange:
    """What moving from `old` to `new` means for a running server (None: unknown before)."""
    if old is None:
        return ConfChange(True, True, tuple(new))
    names = tuple(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))
    return ConfChange(bool(names), any(n in POSTMASTER_CONTEXT for n in names), names)


# -- files -----------------------------------------------------------------------------
def keep_base_conf(data_dir: str) -> bool:
    """Once: move the original postgresql.conf aside as postgresql.base.conf. True if moved.

    A data dir copied from a pgwarden primary already has both (ours includes the base).
    """
    conf, base = os.path.join(data_dir, CONF), os.path.join(data_dir, BASE_CONF)
    if os.path.exists(base):
        return False
    try:
        with open(conf, encoding="utf-8") as f:
            if f.read(len(MARKER)) == MARKER:
                return False
    except FileNotFoundError:
        # No original at all: an empty base keeps our include valid.
        runas.write_db_file(base, "")
        return True
    os.rename(conf, base)
    return True


def write_postgresql_conf(data_dir: str, settings: Mapping[str, str]) -> ConfChange:
    keep_base_conf(data_dir)
    path = os.path.join(data_dir, CONF)
    try:
        with open(path, encoding="utf-8") as f:
            old = parse_postgresql_conf(f.read())
    except FileNotFoundError:
        old = None
    change = diff_settings(old, settings)
    written = runas.write_db_file(path, render_postgresql_conf(settings))
    return change if written else ConfChange()


def set_standby_signal(data_dir: str, standby: bool) -> ConfChange:
    """Create (replica) or remove (primary) standby.signal; only a restart acts on it.

    (Promotion removes it by itself; removing it here is for a stopped ex-replica.)
    """
    path = os.path.join(data_dir, STANDBY_SIGNAL)
    if standby == os.path.exists(path):
        return ConfChange()
    if standby:
        runas.write_db_file(path, "")
    else:
        os.unlink(path)
    return ConfChange(True, True, (STANDBY_SIGNAL,))


def write_hba(data_dir: str, lines: Sequence[str], password_auth: bool = True) -> ConfChange:
    if hba.write_pg_hba(data_dir, lines, password_auth):
        return ConfChange(True, False, ("pg_hba.conf",))
    return ConfChange()


def configure(
    data_dir: str,
    settings: Mapping[str, str],
    *,
    standby: bool,
    hba_lines: Sequence[str] = (),
    password_auth: bool = True,
) -> ConfChange:
    """Bring all three files in line; the combined change says reload or restart."""
    return (
        write_postgresql_conf(data_dir, settings)
        | set_standby_signal(data_dir, standby)
        | write_hba(data_dir, hba_lines, password_auth)
    )


def settings_from_config(
    cfg: PostgresConfig,
    *,
    upstream: Upstream | None = None,
    slot: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    socket_dir: str | None = None,
) -> dict[str, str]:
    """build_settings() fed from the configuration (`parameters`: the merged effective ones)."""
    return build_settings(
        listen_addresses=cfg.listen_addresses,
        port=cfg.listen.port,
        socket_dir=socket_dir or default_socket_dir(cfg.data_dir),
        parameters=cfg.parameters if parameters is None else parameters,
        upstream=upstream,
        slot=slot,
    )
