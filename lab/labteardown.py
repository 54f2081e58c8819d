"""Tearing a lab down: stop agents and the writer politely, SIGKILL the rest, delete the
namespaces, the agents' shared memory and the lab dir. Works on a half-built or crashed lab
(namespaces are also found by prefix in `ip netns list`), and a second time."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from typing import Any

from pgwarden.lab import netns
from pgwarden.lab.common import alive
from pgwarden.lab.labaccess import LabAccess
from pgwarden.lab.labstate import LabError


class LabTeardown(LabAccess):
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


def _mapped_by_anyone(path: str) -> bool:
    """Some process still maps `path`: the file is named by scope and host only, so an agent
    of another lab with the same scope may be using it."""
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
