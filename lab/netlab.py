"""The network-namespace lab: a pgwarden cluster of separate "hosts" on one machine.

Layout (prefix P, default `pgwl` + 4 random characters; subnet 10.A.B.0/24 derived from P):

  P-br      a namespace holding only the Linux bridge `br0` and the host ends `v-<host>`
  P-n1..nN  database hosts: eth0 10.A.B.k/24 (k = 1..N), an agent, PostgreSQL, a watchdog
            emulator; the VIP 10.A.B.100/24 moves between their eth0s
  P-dcs     etcd on 10.A.B.200:2379
  P-client  10.A.B.201: the writer, and every HTTP/SQL request the lab makes (see probe.py)

The root namespace is never touched: no veth end, no address, no route in it. Each veth pair
is created inside P-br with its peer placed straight into the host namespace.

Faults:
* crash HOST: a power cut. The host's cable goes dark (its bridge port is set down), every
  process of its namespace is SIGKILLed (the watchdog emulator included: it is the host's
  hardware) and its eth0 addresses are flushed (RAM is gone, so is the VIP).
* restart HOST: a boot. Anything still running in the namespace is killed, eth0 gets its
  address back (no VIP), the port comes up (unless partitioned), then the emulator and the
  agent start (etcd for the dcs host).
* partition HOST / heal HOST: the host's bridge port `v-HOST` (in P-br) is set down / up: a
  cable pulled at the switch. The host itself sees NO-CARRIER on eth0 and keeps its addresses
  and processes; traffic to and from it is dropped. (Chosen over an nft rule: nft is not
  installed here, and a link change needs nothing inside the host.)
* freeze HOST [--what agent|postgres|all] / thaw: SIGSTOP/SIGCONT by pid. agent: the
  supervisor and its workers (not the postmaster, which runs in its own session); postgres: the
  postmaster and its children; all: every process of the namespace except the watchdog
  emulator (a frozen OS does not freeze the watchdog chip).

State lives in <labdir>/lab.json (default labdir /tmp/pgwarden-lab-P), so separate CLI calls
(`python -m pgwarden.lab VERB`) and the Python API (`Lab`) work on the same lab.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import random
import re
import selectors
import shutil
import signal
import string
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import psutil
import yaml

from pgwarden.lab import netns
from pgwarden.lab.common import (
    PG_BIN,
    SUPERUSER_PASSWORD,
    agent_config,
    alive,
    log_tail,
    spawn,
    wait_until,
)
from pgwarden.lab.etcd import ETCD_BIN, EtcdProcess

STATE_FILE = "lab.json"
BASE_DIR = Path("/tmp")
API_PORT = 8008
PG_PORT = 5432
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
VIP_OCTET = 100
DCS_OCTET = 200
CLIENT_OCTET = 201
MAX_DB_HOSTS = 20
BRIDGE = "br0"
WHATS = ("agent", "postgres", "all")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
EMULATOR_MODULE = "pgwarden.fencing.emulator"


class LabError(RuntimeError):
    pass


def random_prefix() -> str:
    return "pgwl" + "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(4))


def subnet_for(prefix: str) -> tuple[int, int]:
    """(A, B) of the lab's 10.A.B.0/24, derived from the prefix (stable, spread out)."""
    h = hashlib.sha256(prefix.encode()).digest()
    return 64 + h[0] % 128, h[1]


def lab_dir_for(prefix: str, base: Path = BASE_DIR) -> Path:
    return base / f"pgwarden-lab-{prefix}"


def emulator_available() -> bool:
    try:
        return importlib.util.find_spec(EMULATOR_MODULE) is not None
    except ImportError:
        return False


def find_labs(base: Path = BASE_DIR) -> list[Path]:
    return sorted(p.parent for p in base.glob("pgwarden-lab-*/" + STATE_FILE))


# -- the probe: requests from inside a namespace ------------------------------------------

class Probe:
    """A `pgwarden.lab.probe` process inside one namespace; JSON lines over its pipes."""

    def __init__(self, ns: str, python: str, stderr: Path | None = None) -> None:
        self.ns = ns
        self.python = python
        self.stderr = stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self._id = 0
        self._buf = b""
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.close()
            err: Any = subprocess.DEVNULL
            if self.stderr is not None and self.stderr.parent.is_dir():
                err = open(self.stderr, "ab")
            try:
                self.proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.ns, self.python, "-u", "-m", "pgwarden.lab.probe"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                    start_new_session=True)
            finally:
                if err is not subprocess.DEVNULL:
                    err.close()
            self._buf = b""
        return self.proc

    def request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request; waits at most `timeout` + 5 s (then the probe is restarted)."""
        with self._lock:
            return self._request(req, timeout)

    def _request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        self._id += 1
        req = dict(req, id=self._id)
        try:
            proc.stdin.write((json.dumps(req) + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return {"error": f"probe in {self.ns} died"}
        deadline = time.monotonic() + timeout + 5.0
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buf:
                    line, self._buf = self._buf.split(b"\n", 1)
                    try:
                        ans = json.loads(line)
                    except ValueError:
                        continue
                    if ans.get("id") == self._id:
                        return ans  # type: ignore[no-any-return]
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.close()
                    return {"error": f"probe in {self.ns} did not answer in {timeout + 5:.0f} s"}
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.close()
                    return {"error": f"probe in {self.ns} exited"}
                self._buf += chunk

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()  # our own child
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if f:
                    f.close()


# -- the lab --------------------------------------------------------------------------------

class Lab:
    """A lab on this machine. `with Lab(...) as lab:` brings it up and always tears it down.

    Hosts are named `n1..nN`, `dcs`, `client`; `target` arguments also accept `"vip"` or an
    address.
    """

    def __init__(self, prefix: str | None = None, hosts: int = 3, *, lab_dir: str | Path | None = None,
                 scope: str = "lab", ttl: int = 10, loop_wait: int = 2, retry_timeout: int = 3,
                 primary_start_timeout: int | None = None, watchdog: str = "automatic",
                 safety_margin: int = 5, watchdog_timeout: int | None = None, sync: bool = False,
                 python: str | None = None, log: Callable[[str], None] | None = None) -> None:
        prefix = prefix or random_prefix()
        if not PREFIX_RE.match(prefix):
            raise LabError(f"bad prefix {prefix!r}: 1-12 lower-case letters and digits, "
                           "starting with a letter (no '-')")
        if not 1 <= hosts <= MAX_DB_HOSTS:
            raise LabError(f"--hosts must be 1..{MAX_DB_HOSTS}, got {hosts}")
        if watchdog not in ("off", "automatic", "required"):
            raise LabError(f"watchdog mode must be off, automatic or required, got {watchdog!r}")
        self.prefix = prefix
        self.lab_dir = Path(lab_dir) if lab_dir else lab_dir_for(prefix)
        self.python = python or sys.executable
        self.log = log or (lambda msg: None)
        a, b = subnet_for(prefix)
        self.net = f"10.{a}.{b}"
        db = [f"n{i}" for i in range(1, hosts + 1)]
        host_map: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(db, 1):
            host_map[name] = self._host_entry(name, "db", i)
        host_map["dcs"] = self._host_entry("dcs", "dcs", DCS_OCTET)
        host_map["client"] = self._host_entry("client", "client", CLIENT_OCTET)
        self.state: dict[str, Any] = {
            "version": 1,
            "prefix": prefix,
            "lab_dir": str(self.lab_dir),
            "phase": "new",
            "scope": scope,
            "subnet": f"{self.net}.0/24",
            "vip": f"{self.net}.{VIP_OCTET}/24",
            "bridge_ns": f"{prefix}-br",
            "hosts": host_map,
            "ports": {"restapi": API_PORT, "postgresql": PG_PORT,
                      "etcd_client": ETCD_CLIENT_PORT, "etcd_peer": ETCD_PEER_PORT},
            "options": {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout,
                        "primary_start_timeout": primary_start_timeout, "watchdog": watchdog,
                        "safety_margin": safety_margin,
                        "watchdog_timeout": watchdog_timeout or max(1, ttl - safety_margin),
                        "sync": sync},
            "watchdog_mode": watchdog,
            "emulator": False,
            "python": self.python,
            "procs": {},
            "crashed": [],
            "partitioned": [],
            "frozen": {},
            "writer": None,
            "created": time.time(),
        }
        self._children: list[subprocess.Popen[bytes]] = []
        self._probes: dict[str, Probe] = {}

    def _host_entry(self, name: str, kind: str, octet: int) -> dict[str, Any]:
        return {"name": name, "kind": kind, "ns": f"{self.prefix}-{name}",
                "address": f"{self.net}.{octet}", "veth": f"v-{name}",
                "dir": str(self.lab_dir / name)}

    # -- loading and saving ------------------------------------------------------------

    @classmethod
    def load(cls, prefix: str | None = None, lab_dir: str | Path | None = None,
             log: Callable[[str], None] | None = None) -> "Lab":
        """The lab described by a lab.json (by prefix, lab dir, or the only one present)."""
        if lab_dir is None:
            if prefix:
                lab_dir = lab_dir_for(prefix)
            else:
                labs = find_labs()
                if len(labs) != 1:
                    names = ", ".join(p.name.removeprefix("pgwarden-lab-") for p in labs)
                    raise LabError("no lab found: run `up` first" if not labs else
                                   f"several labs ({names}): name one with --prefix")
                lab_dir = labs[0]
        path = Path(lab_dir) / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LabError(f"cannot read {path}: {e}") from None
        opts = state["options"]
        lab = cls(state["prefix"], len(_db_names(state)), lab_dir=state["lab_dir"],
                  scope=state["scope"], ttl=opts["ttl"], loop_wait=opts["loop_wait"],
                  retry_timeout=opts["retry_timeout"],
                  primary_start_timeout=opts["primary_start_timeout"], watchdog=opts["watchdog"],
                  safety_margin=opts["safety_margin"], watchdog_timeout=opts["watchdog_timeout"],
                  sync=opts["sync"], python=state.get("python"), log=log)
        lab.state = state
        return lab

    @property
    def state_path(self) -> Path:
        return self.lab_dir / STATE_FILE

    def _save(self) -> None:
        if not self.lab_dir.is_dir():
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    def _reload(self) -> None:
        try:
            self.state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            pass

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise changes between CLI calls and API users: re-read, change, save."""
        if not self.lab_dir.is_dir():
            yield
            return
        with open(self.lab_dir / "lab.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._reload()
                yield
                self._save()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- names ---------------------------------------------------------------------------

    @property
    def scope(self) -> str:
        return str(self.state["scope"])

    @property
    def hosts(self) -> dict[str, dict[str, Any]]:
        return self.state["hosts"]  # type: ignore[no-any-return]

    @property
    def db_hosts(self) -> list[str]:
        return _db_names(self.state)

    @property
    def vip(self) -> str:
        """The VIP address (without the prefix length)."""
        return str(self.state["vip"]).split("/")[0]

    def ns(self, host: str) -> str:
        return str(self._host(host)["ns"])

    def address(self, target: str) -> str:
        """A host's address; 'vip' gives the VIP; an address is returned as is."""
        if target == "vip":
            return self.vip
        if target in self.hosts:
            return str(self.hosts[target]["address"])
        if re.match(r"^\d+\.\d+\.\d+\.\d+$", target):
            return target
        raise LabError(f"unknown host {target!r} (hosts: {', '.join(self.hosts)}, or vip)")

    def host_dir(self, host: str) -> Path:
        return Path(self._host(host)["dir"])

    def config_path(self, host: str) -> Path:
        return self.host_dir(host) / "pgwarden.yml"

    def log_path(self, host: str) -> Path:
        return self.host_dir(host) / "pgwarden.log"

    def data_dir(self, host: str) -> Path:
        return self.host_dir(host) / "data"

    def _host(self, host: str) -> dict[str, Any]:
        try:
            return self.hosts[host]  # type: ignore[no-any-return]
        except KeyError:
            raise LabError(f"unknown host {host!r} (hosts: {', '.join(self.hosts)})") from None

    def _db(self, host: str) -> dict[str, Any]:
        h = self._host(host)
        if h["kind"] != "db":
            raise LabError(f"{host} is not a database host")
        return h

    # -- bring up ------------------------------------------------------------------------

    def __enter__(self) -> "Lab":
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self, wait: float | None = 120.0) -> str | None:
        """Build the namespaces, start etcd, the emulators and the agents. With `wait`, wait
        (that many seconds) for one primary with every other host a replica; returns its name."""
        self._preflight()
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.lab_dir, 0o755)
        self.state["phase"] = "building"
        self._save()  # from here on, `down` finds what was built even if we fail
        pg = pwd.getpwnam("postgres")
        for name, h in self.hosts.items():
            d = Path(h["dir"])
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o755)
            if h["kind"] == "db":
                # PostgreSQL puts its unix socket in the data dir's parent.
                os.chown(d, pg.pw_uid, pg.pw_gid)
        self._build_network()
        mode = self.state["options"]["watchdog"]
        if mode != "off" and not emulator_available():
            self.log(f"warning: {EMULATOR_MODULE} is not importable: no watchdog emulator, "
                     "agents run with watchdog mode off")
            mode = "off"
        self.state["watchdog_mode"] = mode
        self.state["emulator"] = mode != "off"
        self._start_etcd()
        for host in self.db_hosts:
            self._write_config(host)
        for host in self.db_hosts:
            self._start_db_host(host)
        self.state["phase"] = "up"
        self._save()
        if wait:
            return self.wait_until(self.healthy, wait, "one primary and every other host a replica")
        return None

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces)")
        for tool in ("ip",):
            if shutil.which(tool) is None:
                raise LabError(f"`{tool}` not found (install iproute2)")
        if not os.access(ETCD_BIN, os.X_OK):
            raise LabError(f"{ETCD_BIN} not found (apt-get install etcd-server)")
        if not os.access(os.path.join(PG_BIN, "postgres"), os.X_OK):
            raise LabError(f"{PG_BIN}/postgres not found (apt-get install postgresql-15)")
        taken = [n for n in netns.list_namespaces() if n.startswith(self.prefix + "-")]
        if taken or self.state_path.exists():
            raise LabError(f"lab {self.prefix} already exists ({', '.join(taken) or self.lab_dir}):"
                           f" `down --prefix {self.prefix}` first")

    def _build_network(self) -> None:
        br = self.state["bridge_ns"]
        netns.add(br)
        netns.ip("link", "add", BRIDGE, "type", "bridge", ns=br)
        netns.ip("link", "set", BRIDGE, "up", ns=br)
        netns.ip("link", "set", "lo", "up", ns=br)
        for name, h in self.hosts.items():
            netns.add(h["ns"])
            netns.ip("link", "add", h["veth"], "type", "veth", "peer", "name", "eth0",
                     "netns", h["ns"], ns=br)
            netns.ip("link", "set", h["veth"], "master", BRIDGE, ns=br)
            netns.sysctl(h["ns"], "net.ipv4.conf.eth0.arp_ignore", 1)
            netns.sysctl(h["ns"], "net.ipv4.conf.eth0.arp_announce", 2)
            # Deleting eth0's own address must not take the VIP (a same-subnet secondary) along.
            netns.sysctl(h["ns"], "net.ipv4.conf.eth0.promote_secondaries", 1)
            self._boot_network(name)

    def _boot_network(self, host: str) -> None:
        """A host's network as after a boot: lo and eth0 up, its own address only."""
        h = self._host(host)
        ns = h["ns"]
        netns.ip("link", "set", "lo", "up", ns=ns)
        if not any(a.startswith("127.0.0.1/") for a in netns.addresses(ns, "lo")):
            netns.ip("addr", "add", "127.0.0.1/8", "dev", "lo", ns=ns, check=False)
        netns.ip("addr", "flush", "dev", "eth0", ns=ns, check=False)
        netns.ip("addr", "add", f"{h['address']}/24", "dev", "eth0", ns=ns)
        netns.ip("link", "set", "eth0", "up", ns=ns)
        if host not in self.state["partitioned"]:
            netns.ip("link", "set", h["veth"], "up", ns=self.state["bridge_ns"])

    def _write_config(self, host: str) -> None:
        h = self._db(host)
        o = self.state["options"]
        addr, subnet = h["address"], self.state["subnet"]
        params: dict[str, Any] = {"shared_buffers": "16MB", "wal_keep_size": "64MB",
                                  "max_connections": 50,
                                  # A SIGKILLed postmaster leaves its posix segments in the
                                  # machine-wide /dev/shm (a real power cut clears it); mmap
                                  # keeps them in the data dir, cleaned at start and by down.
                                  "dynamic_shared_memory_type": "mmap",
                                  # who took a row: the writer's table defaults to this
                                  "pgwarden_lab.node": host}
        if o["sync"]:
            params["synchronous_standby_names"] = f"ANY 1 ({', '.join(self.db_hosts)})"
        dcs_extra: dict[str, Any] = {}
        if o["primary_start_timeout"] is not None:
            dcs_extra["primary_start_timeout"] = o["primary_start_timeout"]
        doc = agent_config(
            scope=self.scope, name=host,
            restapi=f"{addr}:{API_PORT}",
            # Every address of the namespace: its own, and the VIP whenever it holds it.
            pg_listen=f"0.0.0.0:{PG_PORT}", pg_connect=f"{addr}:{PG_PORT}",
            data_dir=self.data_dir(host),
            etcd_hosts=[f"{self.address('dcs')}:{ETCD_CLIENT_PORT}"],
            ttl=o["ttl"], loop_wait=o["loop_wait"], retry_timeout=o["retry_timeout"],
            dcs_postgresql={"use_pg_rewind": True, "use_slots": True,
                            "parameters": {"max_connections": 50, "wal_keep_size": "64MB"}},
            dcs_extra=dcs_extra,
            postgresql_extra={"use_pg_rewind": True,
                              "remove_data_directory_on_rewind_failure": True},
            pg_parameters=params,
            pg_hba=["local all all trust",
                    "host all all 127.0.0.1/32 scram-sha-256",
                    f"host replication replicator {subnet} scram-sha-256",
                    f"host all all {subnet} scram-sha-256"],
            watchdog={"mode": self.state["watchdog_mode"],
                      "device": str(self.host_dir(host) / "watchdog"),
                      "safety_margin": o["safety_margin"]},
            vip={"address": self.state["vip"], "interface": "eth0"},
        )
        path = self.config_path(host)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.chmod(path, 0o644)

    def _start_etcd(self) -> None:
        h = self._host("dcs")
        etcd = EtcdProcess(Path(h["dir"]) / "etcd", name="etcd", host=h["address"],
                           client_port=ETCD_CLIENT_PORT, peer_port=ETCD_PEER_PORT,
                           netns=h["ns"], cluster_token=f"pgwarden-{self.prefix}",
                           die_with_parent=False)
        etcd.start(timeout=20)
        pid = etcd.pid
        assert pid is not None
        self._children.append(etcd._proc)  # type: ignore[arg-type] - reaped by us while we live
        etcd.detach()
        self._record("dcs", "etcd", pid)

    def _start_db_host(self, host: str) -> None:
        h = self._db(host)
        d = Path(h["dir"])
        if self.state["emulator"]:
            dev = d / "watchdog"
            with contextlib.suppress(FileNotFoundError):
                if not dev.is_fifo():
                    dev.unlink()
            cmd = ["ip", "netns", "exec", h["ns"], self.python, "-m", EMULATOR_MODULE,
                   "--device", str(dev), "--netns", h["ns"],
                   "--timeout", str(self.state["options"]["watchdog_timeout"]),
                   "--log", str(d / "watchdog.log")]
            proc, logf = spawn(cmd, d / "watchdog.out", cwd=d)
            logf.close()
            self._children.append(proc)
            self._record(host, "emulator", proc.pid)
            wait_until(lambda: dev.is_fifo() or proc.poll() is not None, 10,
                       f"the watchdog emulator of {host} to create {dev}", step=0.05)
            if proc.poll() is not None:
                raise LabError(f"watchdog emulator of {host} exited:\n{log_tail(d / 'watchdog.out')}")
        cmd = ["ip", "netns", "exec", h["ns"], self.python, "-m", "pgwarden.supervisor.main",
               str(self.config_path(host))]
        proc, logf = spawn(cmd, self.log_path(host), cwd=d)
        logf.close()
        self._children.append(proc)
        self._record(host, "agent", proc.pid)

    def _record(self, host: str, what: str, pid: int) -> None:
        try:
            ctime = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            ctime = None
        self.state["procs"].setdefault(host, {})[what] = {"pid": pid, "create_time": ctime}

    # -- processes -----------------------------------------------------------------------

    def pid_of(self, host: str, what: str) -> int | None:
        """The live pid recorded for `what` (agent, emulator, etcd, writer) of `host`."""
        rec = self.state["procs"].get(host, {}).get(what)
        if not rec:
            return None
        pid = int(rec["pid"])
        if not alive(pid) or not netns.in_ns(pid, self.ns(host)):
            return None
        try:
            ctime = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            return None
        if rec.get("create_time") is not None and abs(ctime - rec["create_time"]) > 0.01:
            return None  # the pid was reused
        return pid

    def agent_pid(self, host: str) -> int | None:
        return self.pid_of(host, "agent")

    def agent_alive(self, host: str) -> bool:
        return self.agent_pid(host) is not None

    def postmaster_pid(self, host: str) -> int | None:
        try:
            pid = int((self.data_dir(host) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid) and netns.in_ns(pid, self.ns(host)) else None

    def _tree(self, pid: int | None) -> list[int]:
        if pid is None:
            return []
        try:
            p = psutil.Process(pid)
            return [pid] + [c.pid for c in p.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pids(self, host: str, what: str = "all") -> list[int]:
        """agent: the supervisor and its workers; postgres: the postmaster and its children;
        all: every process of the host's namespace but the watchdog emulator."""
        ns = self.ns(host)
        if what == "all":
            # not the emulator (the hardware) nor our own probe processes
            spare = set(self._tree(self.pid_of(host, "emulator")))
            spare |= {p.pid for p in self._probes.values() if p.pid}
            return [p for p in netns.pids_in(ns) if p not in spare]
        pg = self._tree(self.postmaster_pid(host))
        if what == "postgres":
            return pg
        if what == "agent":
            return [p for p in self._tree(self.agent_pid(host)) if p not in set(pg)]
        raise LabError(f"--what must be one of {', '.join(WHATS)}, got {what!r}")

    def _reap(self) -> None:
        self._children = [p for p in self._children if p.poll() is None]

    # -- faults ----------------------------------------------------------------------------

    def crash(self, host: str) -> int:
        """Power cut: port down, SIGKILL of every process in the namespace, addresses gone."""
        with self._locked():
            h = self._host(host)
            if host not in self.state["crashed"]:
                self.state["crashed"].append(host)
            netns.ip("link", "set", h["veth"], "down", ns=self.state["bridge_ns"])
            n = netns.kill_all(h["ns"])
            netns.ip("addr", "flush", "dev", "eth0", ns=h["ns"], check=False)
            self.state["frozen"].pop(host, None)
            if host == "client":
                self._close_probes()
                self.state["writer"] = None
        self._reap()
        return n

    def restart(self, host: str) -> None:
        """Boot: kill what is left, fresh network, then emulator + agent (etcd on dcs)."""
        with self._locked():
            h = self._host(host)
            netns.kill_all(h["ns"])
            self.state["frozen"].pop(host, None)
            if host in self.state["crashed"]:
                self.state["crashed"].remove(host)
            self._boot_network(host)
            if h["kind"] == "db":
                self._start_db_host(host)
            elif h["kind"] == "dcs":
                self._start_etcd()
        self._reap()

    def partition(self, host: str) -> None:
        with self._locked():
            h = self._host(host)
            if host not in self.state["partitioned"]:
                self.state["partitioned"].append(host)
            netns.ip("link", "set", h["veth"], "down", ns=self.state["bridge_ns"])

    def heal(self, host: str) -> None:
        with self._locked():
            h = self._host(host)
            if host in self.state["partitioned"]:
                self.state["partitioned"].remove(host)
            if host not in self.state["crashed"]:
                netns.ip("link", "set", h["veth"], "up", ns=self.state["bridge_ns"])

    def freeze(self, host: str, what: str = "all") -> list[int]:
        with self._locked():
            pids = self.pids(host, what)
            if not pids:
                raise LabError(f"nothing to freeze on {host} ({what})")
            done = netns.signal_pids(pids, signal.SIGSTOP, self.ns(host))
            rec = self.state["frozen"].setdefault(host, {"what": [], "pids": []})
            rec["what"] = sorted(set(rec["what"]) | {what})
            rec["pids"] = sorted(set(rec["pids"]) | set(done))
        return done

    def thaw(self, host: str, what: str | None = None) -> list[int]:
        """SIGCONT what `freeze` stopped (all of it when `what` is None)."""
        with self._locked():
            rec = self.state["frozen"].get(host, {"what": [], "pids": []})
            if what is None or what == "all":
                pids = set(rec["pids"]) | set(netns.pids_in(self.ns(host)))
                self.state["frozen"].pop(host, None)
            else:
                pids = set(self.pids(host, what))
                if not (set(rec["what"]) - {what}):
                    pids |= set(rec["pids"])
                    self.state["frozen"].pop(host, None)
                else:
                    rec["what"] = [w for w in rec["what"] if w != what]
                    rec["pids"] = sorted(set(rec["pids"]) - pids)
            return netns.signal_pids(sorted(pids), signal.SIGCONT, self.ns(host))

    # -- tear down ---------------------------------------------------------------------

    def down(self, term_timeout: float = 15.0) -> dict[str, Any]:
        """Stop everything and delete the namespaces and the lab dir. Works on a half-built or
        crashed lab (from lab.json and from `ip netns list`), and a second time."""
        if self.state_path.exists():
            self._reload()
        spaces = {h["ns"] for h in self.hosts.values()} | {self.state["bridge_ns"]}
        spaces = {s for s in spaces if netns.exists(s)}
        spaces |= {n for n in netns.list_namespaces() if n.startswith(self.prefix + "-")}
        self._close_probes()
        # 1. wake anything frozen, then ask agents and the writer to stop
        for s in spaces:
            netns.signal_pids(netns.pids_in(s), signal.SIGCONT, s)
        asked = []
        for host in list(self.hosts):
            for what in ("writer", "agent"):
                pid = self.pid_of(host, what) if netns.exists(self.ns(host)) else None
                if pid is not None:
                    netns.signal_pids([pid], signal.SIGTERM, self.ns(host))
                    asked.append(pid)
        end = time.monotonic() + term_timeout
        while asked and time.monotonic() < end:
            self._reap()
            asked = [p for p in asked if alive(p)]
            time.sleep(0.1)
        # 2. everything left (postmasters, etcd, emulators, strays) gets SIGKILL
        killed = 0
        for s in sorted(spaces):
            killed += netns.kill_all(s)
        self._reap()
        # 3. namespaces (hosts first, the bridge last), shared memory, files
        for s in sorted(spaces, key=lambda n: n.endswith("-br")):
            netns.delete(s)
        left = [n for n in netns.list_namespaces() if n.startswith(self.prefix + "-")]
        if self.state["phase"] != "new":  # the scope and host names are known, not guessed
            self._remove_shm()
        shutil.rmtree(self.lab_dir, ignore_errors=True)
        for p in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(2)
        self._reap()
        if left:
            raise LabError(f"namespaces left after down: {left}")
        return {"namespaces": sorted(spaces), "killed_after_term": killed,
                "lab_dir_removed": not self.lab_dir.exists()}

    def _remove_shm(self) -> None:
        from pgwarden.core.shm import shm_path  # noqa: PLC0415

        for host in self.db_hosts:
            path = shm_path(self.scope, host)
            if os.path.exists(path) and not _mapped_by_anyone(path):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _close_probes(self) -> None:
        for p in self._probes.values():
            p.close()
        self._probes.clear()

    # -- inside the lab: exec, HTTP, SQL -------------------------------------------------

    def exec_in(self, host: str, cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in the host's namespace (text output captured)."""
        return netns.ns_exec(self.ns(host), cmd, **kw)

    def probe(self, host: str = "client") -> Probe:
        ns = self.ns(host)
        if ns not in self._probes:
            self._probes[ns] = Probe(ns, self.python, self.lab_dir / f"probe-{host}.err")
        return self._probes[ns]

    def api_get(self, target: str, path: str, timeout: float = 2.0,
                port: int = API_PORT, via: str = "client") -> tuple[int, Any]:
        """(status, JSON body) of GET http://<target>:8008<path> from inside the client
        namespace; status 0 when nothing answered."""
        url = f"http://{self.address(target)}:{port}{path}"
        ans = self.probe(via).request({"op": "http", "url": url, "timeout": timeout}, timeout)
        return int(ans.get("status", 0) or 0), ans.get("body")

    def api_request(self, target: str, path: str, method: str = "POST", body: Any = None,
                    timeout: float = 5.0) -> tuple[int, Any]:
        url = f"http://{self.address(target)}:{API_PORT}{path}"
        ans = self.probe().request({"op": "http", "url": url, "method": method, "body": body,
                                    "timeout": timeout}, timeout)
        return int(ans.get("status", 0) or 0), ans.get("body")

    def tcp_check(self, target: str, port: int, via: str = "client",
                  timeout: float = 1.0) -> bool:
        ans = self.probe(via).request({"op": "tcp", "host": self.address(target), "port": port,
                                       "timeout": timeout}, timeout)
        return bool(ans.get("ok"))

    def sql(self, target: str, query: str, params: Sequence[Any] = (), timeout: float = 5.0,
            dbname: str = "postgres", check: bool = True) -> list[list[Any]]:
        """Rows of `query` on a host or the VIP, run from the client namespace as the
        superuser. An error raises LabError (or returns [] with check=False)."""
        ans = self.probe().request({
            "op": "sql", "host": self.address(target), "port": PG_PORT, "user": "postgres",
            "password": SUPERUSER_PASSWORD, "dbname": dbname, "query": query,
            "params": list(params), "timeout": timeout}, timeout + 3)
        if "error" in ans:
            if check:
                raise LabError(f"SQL on {target}: {ans['error']}")
            return []
        return ans["rows"]  # type: ignore[no-any-return]

    # -- observation -------------------------------------------------------------------

    def live_db_hosts(self) -> list[str]:
        return [h for h in self.db_hosts if h not in self.state["crashed"]]

    def roles(self, hosts: Sequence[str] | None = None) -> dict[str, str | None]:
        """{host: 'primary' / 'replica' / ... (role of a running server per /patroni), None
        when its API does not answer or PostgreSQL is not running}."""
        out: dict[str, str | None] = {}
        for host in hosts if hosts is not None else self.live_db_hosts():
            status, body = self.api_get(host, "/patroni", timeout=1.0)
            if status and isinstance(body, dict) and body.get("state") == "running":
                out[host] = body.get("role")
            else:
                out[host] = None
        return out

    def primary(self, hosts: Sequence[str] | None = None) -> str | None:
        """The one host answering 200 on GET /primary (None if none or several)."""
        hs = hosts if hosts is not None else self.live_db_hosts()
        ps = [h for h in hs if self.api_get(h, "/primary", timeout=1.0)[0] == 200]
        return ps[0] if len(ps) == 1 else None

    def healthy(self, hosts: Sequence[str] | None = None) -> str | None:
        """The primary's name once exactly one of `hosts` (default: all not crashed) is
        primary and every other one answers /replica with 200."""
        hs = list(hosts if hosts is not None else self.live_db_hosts())
        codes = {h: (self.api_get(h, "/primary", timeout=1.0)[0],
                     self.api_get(h, "/replica", timeout=1.0)[0]) for h in hs}
        ps = [h for h, (p, _) in codes.items() if p == 200]
        rs = [h for h, (_, r) in codes.items() if r == 200]
        return ps[0] if len(ps) == 1 and len(rs) == len(hs) - 1 else None

    def vip_holders(self) -> list[str]:
        return [h for h in self.db_hosts
                if any(a.split("/")[0] == self.vip for a in netns.addresses(self.ns(h)))]

    def vip_holder(self) -> str | None:
        holders = self.vip_holders()
        return holders[0] if len(holders) == 1 else None

    def streaming(self, primary: str) -> list[str]:
        """Names (application_name) streaming from `primary`, per pg_stat_replication."""
        rows = self.sql(primary, "SELECT application_name FROM pg_stat_replication "
                        "WHERE state = 'streaming' ORDER BY 1", check=False)
        return [r[0] for r in rows]

    def lags(self) -> dict[str, Any]:
        """{member: lag in bytes (or 'unknown')} from GET /cluster of any answering host."""
        for host in self.live_db_hosts():
            if host in self.state["partitioned"]:
                continue
            status, body = self.api_get(host, "/cluster", timeout=1.0)
            if status == 200 and isinstance(body, dict):
                return {m["name"]: m.get("lag", 0 if m.get("role") == "leader" else None)
                        for m in body.get("members", [])}
        return {}

    def status(self) -> dict[str, Any]:
        self._reload()
        lags = self.lags()
        hosts = []
        for name, h in self.hosts.items():
            entry: dict[str, Any] = {"host": name, "kind": h["kind"], "ns": h["ns"],
                                     "address": h["address"],
                                     "crashed": name in self.state["crashed"],
                                     "partitioned": name in self.state["partitioned"],
                                     "frozen": self.state["frozen"].get(name, {}).get("what", [])}
            frozen = self.state["frozen"].get(name)
            if frozen and not any(alive(p) for p in frozen["pids"]):
                entry["frozen"] = []  # the frozen processes are gone (fenced, crashed)
            if h["kind"] == "db":
                code, body = 0, None
                if name not in self.state["crashed"]:
                    # A partitioned host is asked from inside its own namespace: its own view.
                    via = name if name in self.state["partitioned"] else "client"
                    code, body = self.api_get(name, "/patroni", timeout=1.0, via=via)
                body = body if isinstance(body, dict) else {}
                entry.update({
                    "agent": self.agent_alive(name),
                    "emulator": self.pid_of(name, "emulator") is not None,
                    "api": code,
                    "role": body.get("role"), "state": body.get("state"),
                    "vip": self.vip in [a.split("/")[0] for a in netns.addresses(h["ns"])],
                    "lag": lags.get(name) if body.get("state") == "running" else None,
                    "decision": (body.get("pgwarden") or {}).get("decision_reason"),
                })
            elif h["kind"] == "dcs":
                entry["etcd"] = self.pid_of(name, "etcd") is not None
                entry["etcd_healthy"] = (self.api_get(name, "/health", port=ETCD_CLIENT_PORT,
                                                      timeout=1.0)[1] or {}).get("health") == "true"
            else:
                entry["writer"] = self.pid_of(name, "writer") is not None
            hosts.append(entry)
        return {"prefix": self.prefix, "lab_dir": str(self.lab_dir), "scope": self.scope,
                "subnet": self.state["subnet"], "vip": self.state["vip"],
                "watchdog_mode": self.state["watchdog_mode"], "hosts": hosts}

    def wait_until(self, cond: Callable[[], Any], timeout: float, what: str,
                   step: float = 0.25) -> Any:
        return wait_until(cond, timeout, what, step, dump=self.debug_dump)

    def debug_dump(self, lines: int = 30) -> str:
        parts = []
        for host in self.db_hosts:
            parts.append(f"--- {host} agent log tail ---\n{log_tail(self.log_path(host), lines)}")
        return "\n".join(parts)

    # -- the writer --------------------------------------------------------------------

    def start_writer(self, target: str = "vip", log: str | Path | None = None,
                     duration: float | None = None, table: str = "lab_writes",
                     interval: float = 0.01, extra: Sequence[str] = ()) -> Path:
        """Start lab/writer.py in the client namespace against `target`; returns its log."""
        with self._locked():
            if self.pid_of("client", "writer") is not None:
                raise LabError("a writer already runs: stop it first")
            d = self.host_dir("client")
            log_path = Path(log) if log else d / f"writes-{time.strftime('%H%M%S')}.jsonl"
            cmd = ["ip", "netns", "exec", self.ns("client"), self.python, "-m",
                   "pgwarden.lab.writer", "--host", self.address(target), "--table", table,
                   "--interval", str(interval), "--log", str(log_path), *extra]
            if duration:
                cmd += ["--duration", str(duration)]
            proc, logf = spawn(cmd, d / "writer.out", cwd=d, env={"PGPASSWORD": SUPERUSER_PASSWORD})
            logf.close()
            self._children.append(proc)
            self._record("client", "writer", proc.pid)
            self.state["writer"] = {"log": str(log_path), "target": target, "pid": proc.pid}
        return log_path

    def stop_writer(self, timeout: float = 10.0) -> Path | None:
        """SIGTERM the writer and wait for it; returns its log path."""
        with self._locked():
            pid = self.pid_of("client", "writer")
            w = self.state.get("writer") or {}
            if pid is not None:
                netns.signal_pids([pid], signal.SIGTERM, self.ns("client"))
                end = time.monotonic() + timeout
                while alive(pid) and time.monotonic() < end:
                    self._reap()
                    time.sleep(0.05)
                if alive(pid):
                    netns.signal_pids([pid], signal.SIGKILL, self.ns("client"))
            self._reap()
            self.state["procs"].get("client", {}).pop("writer", None)
            self.state["writer"] = None
        return Path(w["log"]) if w.get("log") else None


def _db_names(state: dict[str, Any]) -> list[str]:
    return [n for n, h in state["hosts"].items() if h["kind"] == "db"]


def _mapped_by_anyone(path: str) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps") as f:
                if path in f.read():
                    return True
        except OSError:
            continue
    return False


# -- the CLI ------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", help="the lab's prefix (default for up: random pgwlXXXX; "
                        "other verbs: the only lab present)")
    common.add_argument("--lab-dir", help="the lab directory (default /tmp/pgwarden-lab-PREFIX)")
    p = argparse.ArgumentParser(prog="pgwarden-lab", description="pgwarden's network-namespace "
                                "lab: N database hosts, etcd and a client, each in its own "
                                "namespace, behind one bridge.")
    sub = p.add_subparsers(dest="verb", required=True)
    up = sub.add_parser("up", parents=[common], help="build the lab and start the cluster")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--scope", default="lab")
    up.add_argument("--ttl", type=int, default=10)
    up.add_argument("--loop-wait", type=int, default=2)
    up.add_argument("--retry-timeout", type=int, default=3)
    up.add_argument("--primary-start-timeout", type=int, default=None)
    up.add_argument("--watchdog", choices=("off", "automatic", "required"), default="automatic")
    up.add_argument("--safety-margin", type=int, default=5)
    up.add_argument("--watchdog-timeout", type=int, default=None,
                    help="the emulator's timeout (default ttl - safety_margin)")
    up.add_argument("--sync", action="store_true",
                    help="synchronous_standby_names = 'ANY 1 (n1, ..., nN)'")
    up.add_argument("--no-wait", action="store_true", help="do not wait for the cluster")
    up.add_argument("--timeout", type=float, default=120.0, help="how long to wait (s)")
    up.add_argument("--keep", action="store_true", help="keep a lab that failed to come up")
    st = sub.add_parser("status", parents=[common], help="per host: agent, role, VIP, lag")
    st.add_argument("--json", action="store_true")
    for verb, helptext in (("crash", "power cut: SIGKILL everything, port down"),
                           ("restart", "boot a crashed host: network, emulator, agent"),
                           ("partition", "set the host's bridge port down"),
                           ("heal", "set the host's bridge port up")):
        v = sub.add_parser(verb, parents=[common], help=helptext)
        v.add_argument("host")
    for verb in ("freeze", "thaw"):
        v = sub.add_parser(verb, parents=[common], help=f"{'SIGSTOP' if verb == 'freeze' else 'SIGCONT'}"
                           " the agent, PostgreSQL, or everything")
        v.add_argument("host")
        v.add_argument("--what", choices=WHATS, default="all" if verb == "freeze" else None)
    sub.add_parser("down", parents=[common], help="stop everything, delete namespaces and files")
    ex = sub.add_parser("exec", parents=[common], help="run a command in a host's namespace")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    sq = sub.add_parser("sql", parents=[common], help="run SQL on a host or the VIP")
    sq.add_argument("target")
    sq.add_argument("query")
    wr = sub.add_parser("writer", parents=[common], help="start/stop the client writer")
    wr.add_argument("action", choices=("start", "stop"))
    wr.add_argument("--target", default="vip")
    wr.add_argument("--duration", type=float, default=None)
    wr.add_argument("--log", default=None)
    sub.add_parser("list", help="labs present on this machine")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr if msg.startswith("warning") else sys.stdout, flush=True)

    try:
        return _run(args, say)
    except (LabError, netns.NetnsError, TimeoutError) as e:
        print(f"pgwarden-lab {args.verb}: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    if args.verb == "list":
        dirs = find_labs()
        spaces = netns.list_namespaces()
        for d in dirs:
            pre = d.name.removeprefix("pgwarden-lab-")
            n = len([s for s in spaces if s.startswith(pre + "-")])
            say(f"{pre}: {d} ({n} namespaces)")
        if not dirs:
            say("no labs")
        return 0
    if args.verb == "up":
        lab = Lab(args.prefix, args.hosts, lab_dir=args.lab_dir, scope=args.scope, ttl=args.ttl,
                  loop_wait=args.loop_wait, retry_timeout=args.retry_timeout,
                  primary_start_timeout=args.primary_start_timeout, watchdog=args.watchdog,
                  safety_margin=args.safety_margin, watchdog_timeout=args.watchdog_timeout,
                  sync=args.sync, log=say)
        t0 = time.monotonic()
        try:
            primary = lab.up(wait=None if args.no_wait else args.timeout)
        except BaseException:
            # Tear down only what this call built (a preflight refusal built nothing).
            if not args.keep and lab.state["phase"] != "new":
                lab.down()
                say(f"lab {lab.prefix} did not come up; torn down (use --keep to keep it)")
            raise
        took = time.monotonic() - t0
        if primary:
            replicas = [h for h in lab.db_hosts if h != primary]
            say(f"lab {lab.prefix} up in {took:.1f} s: {primary} primary, "
                f"{' '.join(replicas) or 'no'} replicas; VIP {lab.vip}, subnet "
                f"{lab.state['subnet']}, dir {lab.lab_dir} (watchdog {lab.state['watchdog_mode']})")
        else:
            say(f"lab {lab.prefix} started in {took:.1f} s (not waiting); dir {lab.lab_dir}")
        return 0
    if args.verb == "down":
        prefix = args.prefix
        if prefix is None and args.lab_dir is None:
            labs = find_labs()
            if len(labs) != 1:
                raise LabError("name the lab with --prefix" + (
                    f" ({', '.join(p.name.removeprefix('pgwarden-lab-') for p in labs)})"
                    if labs else ""))
        try:
            lab = Lab.load(prefix, args.lab_dir, log=say)
        except LabError:
            if prefix is None:
                raise
            lab = Lab(prefix, lab_dir=args.lab_dir, log=say)  # no lab.json: namespaces only
        out = lab.down()
        say(f"lab {lab.prefix} down: {len(out['namespaces'])} namespaces deleted, "
            f"{out['killed_after_term']} processes killed, {lab.lab_dir} removed")
        return 0
    if args.verb == "exec":
        # `exec HOST --prefix P -- CMD`: options after HOST land in the remainder
        while args.cmd[:1] and args.cmd[0] in ("--prefix", "--lab-dir") and len(args.cmd) > 1:
            setattr(args, args.cmd[0][2:].replace("-", "_"), args.cmd[1])
            args.cmd = args.cmd[2:]
    lab = Lab.load(args.prefix, args.lab_dir, log=say)
    try:
        return _verb(lab, args, say)
    finally:
        lab._close_probes()


def _verb(lab: Lab, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    v = args.verb
    if v == "status":
        st = lab.status()
        if args.json:
            print(json.dumps(st, indent=2))
            return 0
        say(f"lab {st['prefix']} scope {st['scope']} subnet {st['subnet']} VIP {st['vip']} "
            f"watchdog {st['watchdog_mode']}")
        for h in st["hosts"]:
            flags = [f for f in ("crashed", "partitioned") if h[f]]
            if h["frozen"]:
                flags.append("frozen:" + ",".join(h["frozen"]))
            extra = f" [{' '.join(flags)}]" if flags else ""
            if h["kind"] == "db":
                lag = h["lag"]
                say(f"  {h['host']:<6} {h['address']:<14} agent {'up' if h['agent'] else 'DOWN':<4} "
                    f"{(h['role'] or '-'):<13} {(h['state'] or '-'):<10} "
                    f"{'VIP ' if h['vip'] else '    '}lag {lag if lag is not None else '-'}{extra}")
            elif h["kind"] == "dcs":
                say(f"  {h['host']:<6} {h['address']:<14} etcd "
                    f"{'healthy' if h['etcd_healthy'] else ('up' if h['etcd'] else 'DOWN')}{extra}")
            else:
                say(f"  {h['host']:<6} {h['address']:<14} writer "
                    f"{'running' if h['writer'] else 'stopped'}{extra}")
        return 0
    if v == "crash":
        n = lab.crash(args.host)
        say(f"{args.host} crashed: {n} processes killed, port down, addresses flushed")
    elif v == "restart":
        lab.restart(args.host)
        say(f"{args.host} restarted (network up, "
            f"{'emulator and agent' if lab.hosts[args.host]['kind'] == 'db' else 'services'} started)")
    elif v == "partition":
        lab.partition(args.host)
        say(f"{args.host} partitioned (bridge port {lab.hosts[args.host]['veth']} down)")
    elif v == "heal":
        lab.heal(args.host)
        say(f"{args.host} healed (bridge port up)")
    elif v == "freeze":
        pids = lab.freeze(args.host, args.what)
        say(f"{args.host}: {args.what} frozen ({len(pids)} processes SIGSTOPped)")
    elif v == "thaw":
        pids = lab.thaw(args.host, args.what)
        say(f"{args.host}: {args.what or 'everything'} thawed ({len(pids)} processes SIGCONTed)")
    elif v == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            raise LabError("exec HOST -- CMD...")
        return subprocess.run(["ip", "netns", "exec", lab.ns(args.host), *cmd],
                              check=False).returncode
    elif v == "sql":
        for row in lab.sql(args.target, args.query):
            say("\t".join("" if c is None else str(c) for c in row))
    elif v == "writer":
        if args.action == "start":
            path = lab.start_writer(args.target, args.log, args.duration)
            say(f"writer started against {args.target} ({lab.address(args.target)}), log {path}")
        else:
            path = lab.stop_writer()
            say(f"writer stopped{', log ' + str(path) if path else ' (none was running)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
