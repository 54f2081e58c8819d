"""A real etcd server for tests, the lab and the demo, controlled by pid only."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from pgwarden.lab.ports import free_port

ETCD_BIN = "/usr/bin/etcd"

# Every started server, so an interpreter exit without teardown still stops them.
_live: weakref.WeakSet[EtcdProcess] = weakref.WeakSet()


def _stop_all() -> None:
    for proc in list(_live):
        proc.kill()


atexit.register(_stop_all)


class EtcdProcess:
    """One etcd member. Its files live in `data_dir`: `data/` (etcd's own) and `etcd.log`.

    With `die_with_parent` the server gets SIGKILL when the thread that started it exits
    (Linux's parent-death signal is per thread): it covers a SIGKILLed test run, but start
    servers from a thread that lives as long as they should.
    """

    def __init__(
        self,
        data_dir: str | Path,
        name: str = "etcd",
        host: str = "127.0.0.1",
        client_port: int = 0,
        peer_port: int = 0,
        netns: str | None = None,
        initial_cluster: str | None = None,
        cluster_token: str = "pgwarden-lab",
        extra_args: Sequence[str] = (),
        die_with_parent: bool = True,
    ) -> None:
        self.dir = Path(data_dir)
        self.name = name
        self.host = host
        # Inside a namespace the address is not bindable here; a loopback probe still
        # finds a number that a fresh namespace leaves free.
        probe_host = "127.0.0.1" if netns else host
        self.client_port = client_port or free_port(probe_host)
        self.peer_port = peer_port or free_port(probe_host)
        self.netns = netns
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token
        self.extra_args = list(extra_args)
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses -----------------------------------------------------------------
    @property
    def client_url(self) -> str:
        return f"http://{self._url_host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self._url_host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        """'host:port', the form Etcd3DCS takes."""
        return f"{self._url_host}:{self.client_port}"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def log_path(self) -> Path:
        return self.dir / "etcd.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def command(self) -> list[str]:
        cmd = [
            ETCD_BIN,
            f"--name={self.name}",
            f"--data-dir={self.dir / 'data'}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.cluster_token}",
            "--initial-cluster-state=new",
            "--logger=zap",
            *self.extra_args,
        ]
        if self.netns:
            # `ip netns exec` execs in place (no fork), so the pid we hold is etcd's.
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        if self.die_with_parent and shutil.which("setpriv"):
            # setpriv also execs in place; it avoids preexec_fn, unsafe in threaded code.
            cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
        return cmd

    # -- lifecycle -----------------------------------------------------------------
    def start(self, timeout: float = 10.0, wait: bool = True) -> None:
        """Launch the server; with `wait`, return once /health says true.

        wait=False is for members of a new multi-member cluster, healthy only together.
        """
        if self.pid is not None:
            raise RuntimeError(f"etcd {self.name} already runs as pid {self.pid}")
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(self.command())}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C on the test run must not kill it before teardown.
                start_new_session=True,
            )
        _live.add(self)
        if wait:
            try:
                self.wait_healthy(timeout)
            except BaseException:
                self.stop()
                raise

    def wait_healthy(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited during start:\n{self.log_tail()}")
            if self.is_healthy():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd {self.name} not healthy after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def is_healthy(self) -> bool:
        url = f"{self.client_url}/health"
        if self.netns:
            probe = (
                "import sys, urllib.request as u\n"
                f"sys.exit(0 if b'\"true\"' in u.urlopen({url!r}, timeout=0.5).read() else 1)"
            )
            cmd = ["ip", "netns", "exec", self.netns, sys.executable, "-c", probe]
            try:
                return subprocess.run(cmd, check=False, capture_output=True, timeout=3).returncode == 0
            except subprocess.TimeoutExpired:
                return False
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                return b'"true"' in resp.read()
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (and SIGCONT, in case it is frozen), then SIGKILL; always reaps."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait()
        self._proc = None
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL, as a crash would; reaps the process."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGKILL)
            proc.wait()
        self._proc = None
        _live.discard(self)

    def detach(self) -> None:
        """Forget the server without stopping it: it outlives this interpreter (no atexit
        kill). For a CLI that starts a server and exits; stop it later by pid."""
        self._proc = None
        _live.discard(self)

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (if running) and start again on the same data dir and ports."""
        self.stop()
        self.start(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        if self.pid is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
