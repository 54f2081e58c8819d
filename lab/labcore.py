"""The base of `Lab`: its state (lab.json, locked between processes), names and processes.

The other parts of the Lab class (build, faults, access, observe, writer control, teardown)
are mixins over this base, one file each; `lab/lab.py` puts them together.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import psutil

from pgwarden.lab import netns
from pgwarden.lab.common import alive, process_identity, same_process
from pgwarden.lab.labstate import (
    AGENT_WORKERS,
    LOCK_FILE,
    STATE_FILE,
    WHATS,
    LabError,
    check_options,
    db_names,
    find_lab_dir,
    lab_dir_for,
    new_state,
    random_prefix,
    read_state,
    write_state,
)
from pgwarden.lab.probe_client import Probe

if TYPE_CHECKING:
    from pgwarden.core.shm import SectionView

L = TypeVar("L", bound="LabCore")


class LabCore:
    """A lab on this machine: its lab.json document and what can be read off it.

    Hosts are named `n1..nN`, `dcs`, `client`; `target` arguments also accept `"vip"` or an
    address.
    """

    def __init__(self, prefix: str | None = None, hosts: int = 3, *, lab_dir: str | Path | None = None,
                 scope: str = "lab", ttl: int = 10, loop_wait: int = 2, retry_timeout: int = 3,
                 primary_start_timeout: int | None = None, watchdog: str = "automatic",
                 safety_margin: int = 5, watchdog_timeout: int | None = None, sync: bool = False,
                 python: str | None = None, log: Callable[[str], None] | None = None,
                 owned: bool = False) -> None:
        prefix = prefix or random_prefix()
        check_options(prefix, hosts, watchdog)
        self.prefix = prefix
        self.lab_dir = Path(lab_dir) if lab_dir else lab_dir_for(prefix)
        self.python = python or sys.executable
        self.log = log or (lambda msg: None)
        options = {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout,
                   "primary_start_timeout": primary_start_timeout, "watchdog": watchdog,
                   "safety_margin": safety_margin,
                   "watchdog_timeout": watchdog_timeout or max(1, ttl - safety_margin),
                   "sync": sync}
        self.state: dict[str, Any] = new_state(prefix, hosts, self.lab_dir, scope=scope,
                                               options=options, python=self.python)
        if owned:
            # lives only as long as this process (a test session): once it is gone, a later
            # sweep (lab/labsweep.py) removes what it left, even after a SIGKILL
            self.state["owner"] = process_identity(os.getpid())
        self.net = str(self.state["subnet"]).rsplit(".", 1)[0]
        self._children: list[subprocess.Popen[bytes]] = []
        self._exited: dict[int, int] = {}  # pid -> exit status of children reaped already
        self._probes: dict[str, Probe] = {}

    # -- loading and saving ------------------------------------------------------------

    @classmethod
    def load(cls: type[L], prefix: str | None = None, lab_dir: str | Path | None = None,
             log: Callable[[str], None] | None = None) -> L:
        """The lab described by a lab.json (by prefix, lab dir, or the only one present)."""
        state = read_state(find_lab_dir(prefix, lab_dir))
        opts = state["options"]
        lab = cls(state["prefix"], len(db_names(state)), lab_dir=state["lab_dir"],
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
        if self.lab_dir.is_dir():
            write_state(self.lab_dir, self.state)

    def _reload(self) -> None:
        with contextlib.suppress(LabError):
            self.state = read_state(self.lab_dir)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise changes between CLI calls and API users: re-read, change, save."""
        if not self.lab_dir.is_dir():
            yield
            return
        with open(self.lab_dir / LOCK_FILE, "a") as lock:
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
        return db_names(self.state)

    @property
    def options(self) -> dict[str, Any]:
        """ttl, loop_wait, retry_timeout, safety_margin, watchdog, ... as the lab was built."""
        return self.state["options"]  # type: ignore[no-any-return]

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
            return self.hosts[host]
        except KeyError:
            raise LabError(f"unknown host {host!r} (hosts: {', '.join(self.hosts)})") from None

    def _db(self, host: str) -> dict[str, Any]:
        h = self._host(host)
        if h["kind"] != "db":
            raise LabError(f"{host} is not a database host")
        return h

    # -- processes -----------------------------------------------------------------------

    def _record(self, host: str, what: str, pid: int) -> None:
        self.state["procs"].setdefault(host, {})[what] = \
            process_identity(pid) or {"pid": pid, "create_time": None}

    def pid_of(self, host: str, what: str) -> int | None:
        """The live pid recorded for `what` (agent, emulator, etcd, writer) of `host`."""
        rec = self.state["procs"].get(host, {}).get(what)
        if not rec or not same_process(rec):  # gone, or the pid was reused
            return None
        pid = int(rec["pid"])
        return pid if netns.in_ns(pid, self.ns(host)) else None

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
        all: every process of the host's namespace but the watchdog emulator; supervisor:
        the agent's main process alone; `<worker>-worker` (lease, postgres, api, watchdog,
        network): that one worker process."""
        ns = self.ns(host)
        if what == "all":
            # not the emulator (the hardware) nor our own probe processes
            spare = set(self._tree(self.pid_of(host, "emulator")))
            spare |= {p.pid for p in self._probes.values() if p.pid}
            return [p for p in netns.pids_in(ns) if p not in spare]
        if what == "supervisor":
            pid = self.agent_pid(host)
            return [pid] if pid is not None else []
        if what.endswith("-worker") and what.removesuffix("-worker") in AGENT_WORKERS:
            pid = self.worker_pids(host).get(what.removesuffix("-worker"))
            return [pid] if pid is not None else []
        pg = self._tree(self.postmaster_pid(host))
        if what == "postgres":
            return pg
        if what == "agent":
            return [p for p in self._tree(self.agent_pid(host)) if p not in set(pg)]
        raise LabError(f"--what must be one of {', '.join(WHATS)}, got {what!r}")

    def agent_section(self, host: str, section: str) -> SectionView | None:
        """One section of the host's agent's shared state as last published (None when
        there is no block or the section is torn). The block stays in /dev/shm after the
        agent was frozen or killed, until an agent starts again."""
        from pgwarden.core.shm import SharedState, shm_path  # noqa: PLC0415

        try:
            shm = SharedState.attach(shm_path(self.scope, host))
        except OSError:
            return None
        try:
            view = shm.read(section)
        finally:
            shm.close(unlink=False)
        return None if view.torn else view

    def worker_pids(self, host: str) -> dict[str, int]:
        """{worker: pid} of the host's live agent, as its supervisor last published them in
        its shared state (/dev/shm is shared by every namespace, and reading it needs nothing
        from the agent, so this works while the agent is frozen). Only pids that are still
        children of the agent's supervisor count: a worker killed a moment ago and not yet
        replaced is left out."""
        agent = self.agent_pid(host)
        if agent is None:
            return {}
        view = self.agent_section(host, "supervisor")
        workers = view.data.get("workers") if view is not None else None
        out: dict[str, int] = {}
        for name, w in (workers or {}).items():
            pid = int((w or {}).get("pid") or 0)
            try:
                if pid and psutil.Process(pid).ppid() == agent:
                    out[name] = pid
            except psutil.NoSuchProcess:
                continue
        return out

    def agent_exit_status(self, host: str, timeout: float = 0.0) -> int | None:
        """The exit status of the host's agent if this Lab object started it and it has
        exited (waiting up to `timeout` s for that); None while it runs or when unknown."""
        rec = self.state["procs"].get(host, {}).get("agent")
        if not rec:
            return None
        if int(rec["pid"]) in self._exited:
            return self._exited[int(rec["pid"])]
        for proc in self._children:
            if proc.pid == int(rec["pid"]):
                try:
                    return proc.wait(timeout) if timeout > 0 else proc.poll()
                except subprocess.TimeoutExpired:
                    return None
        return None

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        """Wait (reaping our children) until `pid` has exited; False on timeout."""
        end = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < end:
            self._reap()
            time.sleep(0.02)
        self._reap()
        return not alive(pid)

    def _reap(self) -> None:
        for p in self._children:
            if p.poll() is not None:
                self._exited[p.pid] = p.returncode  # agent_exit_status() reads it later
        self._children = [p for p in self._children if p.returncode is None]
