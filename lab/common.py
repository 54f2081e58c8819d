"""What the loopback harness and the network-namespace lab share.

The agent's config file (one builder, so both harnesses run the same kind of node), starting
an agent process with its log, process liveness by pid, JSON parsing, polling with a deadline.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Self, Sequence

import psutil

PG_BIN = "/usr/lib/postgresql/15/bin"
SUPERUSER_PASSWORD = "warden-super"
REPLICATION_PASSWORD = "warden-repl"


def agent_config(
    *,
    scope: str,
    name: str,
    restapi: str,
    pg_listen: str,
    pg_connect: str,
    data_dir: str | Path,
    etcd_hosts: Sequence[str],
    ttl: int,
    loop_wait: int,
    retry_timeout: int,
    pg_hba: Sequence[str],
    pg_parameters: dict[str, Any],
    dcs_postgresql: dict[str, Any] | None = None,
    dcs_extra: dict[str, Any] | None = None,
    postgresql_extra: dict[str, Any] | None = None,
    watchdog: dict[str, Any] | None = None,
    vip: dict[str, Any] | None = None,
    restapi_connect: str | None = None,
) -> dict[str, Any]:
    """One agent's YAML document (Patroni's keys), as the harnesses write it."""
    dcs_pg = {"use_pg_rewind": False, "use_slots": True,
              "parameters": {"max_connections": 50}}
    dcs_pg.update(dcs_postgresql or {})
    doc: dict[str, Any] = {
        "scope": scope,
        "namespace": "/service/",
        "name": name,
        "restapi": {"listen": restapi, "connect_address": restapi_connect or restapi},
        "etcd3": {"hosts": list(etcd_hosts)},
        "bootstrap": {"dcs": {
            "ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout,
            "maximum_lag_on_failover": 1048576,
            "postgresql": dcs_pg,
            **(dcs_extra or {}),
        }},
        "postgresql": {
            "listen": pg_listen,
            "connect_address": pg_connect,
            "data_dir": str(data_dir),
            "bin_dir": PG_BIN,
            **(postgresql_extra or {}),
            "authentication": {
                "superuser": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                "replication": {"username": "replicator", "password": REPLICATION_PASSWORD},
            },
            "parameters": dict(pg_parameters),
            "pg_hba": list(pg_hba),
        },
        "watchdog": watchdog or {"mode": "off"},
        "tags": {"nofailover": False},
        "log": {"level": "INFO"},
    }
    if vip is not None:
        doc["vip"] = vip
    return doc


def spawn(cmd: Sequence[str], log_path: Path, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start `cmd` in its own session (a Ctrl-C on the caller does not reach it), stdout and
    stderr appended to `log_path`. Returns the process and the open log file (close it)."""
    log = open(log_path, "ab")
    log.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
    log.flush()
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(cwd) if cwd else None,
                            env=full_env, start_new_session=True)
    return proc, log


def alive(pid: int | None) -> bool:
    """The process exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class BackgroundPoll:
    """Calls `poll()` at once and then every `interval` seconds in a daemon thread, while
    used as a context manager; the subclass keeps what it saw. A poll that raises ends the
    thread, and the error is raised again on exit (not a silent "never changed")."""

    interval = 0.1

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def poll(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._error is not None and exc[0] is None:
            raise self._error

    def _run(self) -> None:
        try:
            while True:
                self.poll()
                if self._stop.wait(self.interval):
                    return
        except Exception as e:  # noqa: BLE001 - handed to the owner at exit
            self._error = e


def process_identity(pid: int) -> dict[str, Any] | None:
    """{pid, create_time} of a live process: names it even after its pid is reused."""
    try:
        return {"pid": pid, "create_time": psutil.Process(pid).create_time()}
    except psutil.NoSuchProcess:
        return None


def same_process(rec: dict[str, Any]) -> bool:
    """The process `process_identity` recorded still runs (its pid was not reused)."""
    pid = rec.get("pid")
    if not isinstance(pid, int) or not alive(pid):
        return False
    try:
        ctime = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    return rec.get("create_time") is None or abs(ctime - rec["create_time"]) <= 0.01


def parse_json(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.2,
               dump: Callable[[], str] | None = None) -> Any:
    """Poll `cond` until it returns something truthy (returned); TimeoutError otherwise."""
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= end:
            break
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}"
                       + ("\n" + dump() if dump else ""))
