"""The split-brain checker on a lab: a recording writer inside a host, the rows each host
holds afterwards, and the check. The rules live in lab/splitbrain.py (pure); the writer in
lab/acked_writer.py; `Lab.start_acked_writer()` runs one in the client namespace.
"""
from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path
from typing import Sequence

from pgwarden.lab.acked_writer import TABLE, read_log
from pgwarden.lab.common import SUPERUSER_PASSWORD, spawn
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import LabError
from pgwarden.lab.splitbrain import Report, check


def spawn_acked_writer(lab: Lab, host: str, log: Path, *, first_seq: int,
                       target: str | None = None, table: str = TABLE, interval: float = 0.01,
                       extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """A recording writer running inside `host`'s namespace against `target` (default: the
    host's own address), e.g. to see how long an isolated primary keeps acknowledging local
    writes. Give it a `first_seq` range of its own when it shares the table with another
    writer. Stop it with `stop_process`; `lab.down()` kills it with its namespace anyway."""
    cmd = ["ip", "netns", "exec", lab.ns(host), lab.python, "-m", "pgwarden.lab.acked_writer",
           "--host", lab.address(target or host), "--table", table, "--interval", str(interval),
           "--first-seq", str(first_seq), "--log", str(log), *extra]
    proc, out = spawn(cmd, log.with_suffix(".out"), env={"PGPASSWORD": SUPERUSER_PASSWORD})
    out.close()
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM (the writer writes its stop marker), SIGKILL after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def seqs_on(lab: Lab, host: str, table: str = TABLE) -> set[int]:
    """The sequence numbers in `table` on `host` (LabError when it cannot be read)."""
    rows = lab.sql(host, f"SELECT seq FROM {table}", timeout=30)
    return {int(r[0]) for r in rows}


def check_lab(lab: Lab, logs: Sequence[Path], final: str, *,
              survivors: Sequence[str] | None = None, fault_time: float | None = None,
              table: str = TABLE, async_window: float = 1.0, reign_gap: float = 1.0) -> Report:
    """Check the writers' `logs` against the rows on the final primary `final` and on each
    surviving host (default: every other host not crashed; one that cannot be read is
    left out: it is not a survivor). Run it once the writers have stopped."""
    others: dict[str, set[int]] = {}
    for host in survivors if survivors is not None else lab.live_db_hosts():
        if host == final:
            continue
        with contextlib.suppress(LabError):
            others[host] = seqs_on(lab, host, table)
    return check(read_log(*logs), seqs_on(lab, final, table), survivors=others,
                 fault_time=fault_time, async_window=async_window, reign_gap=reign_gap)
