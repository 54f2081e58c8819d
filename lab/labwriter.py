"""Starting and stopping lab/writer.py in the client namespace (one writer at a time)."""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Sequence

from pgwarden.lab import netns
from pgwarden.lab.common import SUPERUSER_PASSWORD, spawn
from pgwarden.lab.labcore import LabCore
from pgwarden.lab.labstate import LabError


class LabWriterControl(LabCore):
    def start_writer(self, target: str = "vip", log: str | Path | None = None,
                     duration: float | None = None, table: str = "lab_writes",
                     interval: float = 0.01, extra: Sequence[str] = (),
                     module: str = "pgwarden.lab.writer") -> Path:
        """Start lab/writer.py (or `module`, which takes the same options, e.g.
        lab/acked_writer.py) in the client namespace against `target`; returns its log."""
        with self._locked():
            if self.pid_of("client", "writer") is not None:
                raise LabError("a writer already runs: stop it first")
            d = self.host_dir("client")
            log_path = Path(log) if log else d / f"writes-{time.strftime('%H%M%S')}.jsonl"
            cmd = ["ip", "netns", "exec", self.ns("client"), self.python, "-m",
                   module, "--host", self.address(target), "--table", table,
                   "--interval", str(interval), "--log", str(log_path), *extra]
            if duration:
                cmd += ["--duration", str(duration)]
            proc, logf = spawn(cmd, d / "writer.out", cwd=d, env={"PGPASSWORD": SUPERUSER_PASSWORD})
            logf.close()
            self._children.append(proc)
            self._record("client", "writer", proc.pid)
            self.state["writer"] = {"log": str(log_path), "target": target, "pid": proc.pid}
        return log_path

    def start_acked_writer(self, target: str = "vip", log: str | Path | None = None,
                           duration: float | None = None, table: str = "lab_acked",
                           first_seq: int = 1, interval: float = 0.01,
                           extra: Sequence[str] = ()) -> Path:
        """The split-brain checker's recording writer (lab/acked_writer.py) as the lab's one
        writer; `stop_writer` stops it, `acked_writer.read_log` reads it."""
        if log is None:
            log = self.host_dir("client") / f"acked-{time.strftime('%H%M%S')}.jsonl"
        return self.start_writer(target, log, duration, table, interval,
                                 ["--first-seq", str(first_seq), *extra],
                                 module="pgwarden.lab.acked_writer")

    def stop_writer(self, timeout: float = 10.0) -> Path | None:
        """SIGTERM the writer and wait for it; returns its log path."""
        with self._locked():
            pid = self.pid_of("client", "writer")
            w = self.state.get("writer") or {}
            if pid is not None:
                netns.signal_pids([pid], signal.SIGTERM, self.ns("client"))
                if not self._wait_gone(pid, timeout):
                    netns.signal_pids([pid], signal.SIGKILL, self.ns("client"))
            self._reap()
            self.state["procs"].get("client", {}).pop("writer", None)
            self.state["writer"] = None
        return Path(w["log"]) if w.get("log") else None
