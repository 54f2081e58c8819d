"""A pgwarden cluster on loopback: one etcd and N agents, each with its own ports and files.

Used by the integration tests (and handy by hand: `python -m pgwarden.lab.loopback DIR`).
Every process it starts is tracked by pid and stopped by `close()`, also after a failure.
"""
from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from pgwarden.lab.common import (  # noqa: F401 - PG_BIN and the passwords are re-exported
    PG_BIN,
    REPLICATION_PASSWORD,
    SUPERUSER_PASSWORD,
    agent_config,
    alive as _alive,
    log_tail,
    parse_json as _json,
    spawn,
    wait_until,
)
from pgwarden.lab.etcd import EtcdProcess
from pgwarden.lab.ports import free_port


@dataclass
class Node:
    name: str
    dir: Path
    api_port: int
    pg_port: int
    as_postgres_user: bool = False
    proc: subprocess.Popen[bytes] | None = None
    log_file: Any = None

    @property
    def config_path(self) -> Path:
        return self.dir / "pgwarden.yml"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "pgwarden.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        """(status, parsed JSON body or None); status 0 when the API does not answer."""
        try:
            with urllib.request.urlopen(self.api + path, timeout=timeout) as r:
                return r.status, _json(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _json(e.read())
        except (urllib.error.URLError, OSError):
            return 0, None

    def request(self, method: str, path: str, body: Any = None,
                timeout: float = 60.0) -> tuple[int, str]:
        """(status, body text) of a call with an optional JSON body; 0 when unanswered."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return 0, ""


@dataclass
class LoopbackCluster:
    base: Path
    size: int = 3
    scope: str = "demo"
    ttl: int = 10
    loop_wait: int = 2
    retry_timeout: int = 3
    safety_margin: int = 3
    postgres_user_nodes: tuple[str, ...] = ()  # run these agents as the postgres OS user
    extra_dcs: dict[str, Any] = field(default_factory=dict)
    # per-node postgresql.* additions (e.g. callbacks): {node name: {...}}
    postgresql_extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    etcd: EtcdProcess | None = None
    nodes: dict[str, Node] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        for i in range(1, self.size + 1):
            name = f"n{i}"
            node = Node(name, self.base / name, free_port(), free_port(),
                        as_postgres_user=name in self.postgres_user_nodes)
            node.dir.mkdir(exist_ok=True)
            # PostgreSQL puts its socket in the data dir's parent (per instance), so the
            # database user must own it, as /var/lib/postgresql/15 is owned on Debian.
            if os.geteuid() == 0:
                pw = pwd.getpwnam("postgres")
                os.chown(node.dir, pw.pw_uid, pw.pw_gid)
            self.nodes[name] = node

    # -- setup ------------------------------------------------------------------------

    def start_etcd(self) -> EtcdProcess:
        self.etcd = EtcdProcess(self.base / "etcd")
        self.etcd.start()
        return self.etcd

    def config_for(self, node: Node) -> dict[str, Any]:
        assert self.etcd is not None
        return agent_config(
            scope=self.scope, name=node.name,
            restapi=f"127.0.0.1:{node.api_port}",
            pg_listen=f"127.0.0.1:{node.pg_port}", pg_connect=f"127.0.0.1:{node.pg_port}",
            data_dir=node.data_dir, etcd_hosts=[self.etcd.endpoint],
            ttl=self.ttl, loop_wait=self.loop_wait, retry_timeout=self.retry_timeout,
            dcs_extra=self.extra_dcs,
            postgresql_extra=self.postgresql_extra.get(node.name),
            pg_parameters={"shared_buffers": "16MB", "fsync": "off", "wal_keep_size": "64MB",
                           # a SIGKILLed postmaster leaves its DSM segments in its data dir,
                           # not in the machine-wide /dev/shm
                           "dynamic_shared_memory_type": "mmap"},
            pg_hba=["local all all trust",
                    "host replication replicator 127.0.0.1/32 scram-sha-256",
                    "host all all 127.0.0.1/32 scram-sha-256"],
            watchdog={"mode": "off", "safety_margin": self.safety_margin},
        )

    def write_configs(self) -> None:
        for node in self.nodes.values():
            node.config_path.write_text(yaml.safe_dump(self.config_for(node), sort_keys=False))
            os.chmod(node.config_path, 0o644)

    # -- agents -----------------------------------------------------------------------

    def start(self, name: str) -> Node:
        node = self.nodes[name]
        cmd = [sys.executable, "-m", "pgwarden.supervisor.main", str(node.config_path)]
        if node.as_postgres_user and os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        node.proc, node.log_file = spawn(cmd, node.log_path, cwd=node.dir)
        return node

    def start_all(self) -> None:
        if self.etcd is None:
            self.start_etcd()
        self.write_configs()
        for name in self.nodes:
            self.start(name)

    def agent_pid(self, name: str) -> int | None:
        """The supervisor's pid (the runuser wrapper's child when run as postgres)."""
        node = self.nodes[name]
        if node.proc is None or node.proc.poll() is not None:
            return None
        if not node.as_postgres_user:
            return node.proc.pid
        import psutil

        try:
            kids = psutil.Process(node.proc.pid).children()
        except psutil.NoSuchProcess:
            return None
        return kids[0].pid if kids else None

    def signal_agent(self, name: str, sig: int) -> None:
        pid = self.agent_pid(name)
        if pid:
            os.kill(pid, sig)

    def wait_agent_exit(self, name: str, timeout: float) -> int | None:
        node = self.nodes[name]
        if node.proc is None:
            return None
        try:
            return node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, name: str, timeout: float = 60.0) -> None:
        node = self.nodes[name]
        if node.proc is not None and node.proc.poll() is None:
            self.signal_agent(name, signal.SIGTERM)
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(node.proc.pid)
                node.proc.wait(10)
        if node.log_file:
            node.log_file.close()
            node.log_file = None
        self._kill_postmaster(node)

    def _kill_postmaster(self, node: Node) -> None:
        """A postmaster left by a killed agent (KillMode=process semantics): stop it by pid."""
        pidfile = node.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGQUIT)
        except (ProcessLookupError, PermissionError):
            return
        end = time.monotonic() + 10
        while time.monotonic() < end and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def etcd_get(self, key: str) -> str | None:
        """A key of the cluster read straight from etcd (as Patroni tooling would read it)."""
        with self._etcd_client() as client:
            value, _ = client.get(self._key(key))
            return None if value is None else value.decode()

    def etcd_put(self, key: str, value: str) -> None:
        """Write a key straight to etcd (as `patronictl edit-config` would)."""
        with self._etcd_client() as client:
            client.put(self._key(key), value)

    def _key(self, key: str) -> str:
        return f"/service/{self.scope}/{key}"

    def _etcd_client(self) -> Any:
        os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        import etcd3  # protobuf needs the variable above before its first import

        assert self.etcd is not None
        host, port = self.etcd.endpoint.rsplit(":", 1)
        return etcd3.client(host=host, port=int(port), timeout=5)

    def sql(self, name: str, query: str, *args: object) -> list[tuple[Any, ...]] | None:
        """Rows of one statement on a member as the superuser ([] when it returns none);
        None when the member does not answer (stopped, restarting, cloning)."""
        import psycopg

        node = self.nodes[name]
        try:
            with psycopg.connect(host="127.0.0.1", port=node.pg_port, user="postgres",
                                 password=SUPERUSER_PASSWORD, dbname="postgres",
                                 connect_timeout=2, autocommit=True) as conn:
                cur = conn.execute(query, args or None)  # type: ignore[arg-type]
                return cur.fetchall() if cur.description else []
        except psycopg.Error:
            return None

    def postmaster_pid(self, name: str) -> int | None:
        try:
            return int((self.nodes[name].data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def crash(self, name: str) -> None:
        """A power cut of the node: SIGKILL the agent's process group and the postmaster."""
        node = self.nodes[name]
        pm = self.postmaster_pid(name)
        if node.proc is not None and node.proc.poll() is None:
            _kill_group(node.proc.pid)
            node.proc.wait(10)
        if pm:
            try:
                os.kill(pm, signal.SIGKILL)
            except ProcessLookupError:
                pass
            end = time.monotonic() + 10
            while time.monotonic() < end and _alive(pm):
                time.sleep(0.05)
        if node.log_file:
            node.log_file.close()
            node.log_file = None

    def close(self) -> None:
        for name in self.nodes:
            try:
                self.stop(name, timeout=30)
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        if self.etcd is not None:
            self.etcd.stop()

    def __enter__(self) -> "LoopbackCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observation ------------------------------------------------------------------

    def roles(self) -> dict[str, tuple[int, int]]:
        """{name: (GET /primary status, GET /replica status)} for running agents."""
        out = {}
        for name, node in self.nodes.items():
            if node.proc is None or node.proc.poll() is not None:
                continue
            out[name] = (node.get("/primary")[0], node.get("/replica")[0])
        return out

    def primary(self) -> str | None:
        ps = [n for n, (p, _) in self.roles().items() if p == 200]
        return ps[0] if len(ps) == 1 else None

    def wait_until(self, cond: Callable[[], Any], timeout: float, what: str,
                   step: float = 0.2) -> Any:
        return wait_until(cond, timeout, what, step, dump=self.debug_dump)

    def debug_dump(self) -> str:
        parts = []
        for name, node in self.nodes.items():
            parts.append(f"--- {name} log tail ---\n{log_tail(node.log_path)}")
            pg_log = Path(str(node.data_dir) + ".log")
            parts.append(f"--- {name} PostgreSQL log tail ---\n{log_tail(pg_log)}")
        return "\n".join(parts)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
