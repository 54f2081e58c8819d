"""Running real `patronictl` (Patroni 4.1, from its own venv) against a loopback cluster.

Shared by the read-only compat tests (test_patronictl_compat.py) and the operations tests
(test_patronictl_ops.py): where patronictl lives, how it is run (a clean environment and a
config naming only the DCS, the scope and the namespace), and how its tables are read.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from pgwarden.lab.loopback import LoopbackCluster

REPO = Path(__file__).resolve().parents[2]
PATRONICTL = REPO / ".venv-patroni" / "bin" / "patronictl"
BOOT_TIMEOUT = 120.0
CTL_TIMEOUT = 30.0

MISSING = (f"real patronictl not found at {PATRONICTL}: run `make test` (it builds the "
           f"Patroni venv .venv-patroni), then run this test again")


@dataclass
class Ctl:
    """The running cluster and a way to run patronictl against it."""

    cluster: LoopbackCluster
    config: Path
    home: Path

    def call(self, *args: str, timeout: float = CTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """patronictl's completed process, whatever its exit code."""
        # A clean environment: nothing from the project venv (PYTHONPATH & co.) and a HOME
        # of our own, so no ~/.config/patroni/patronictl.yaml of the machine is picked up.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        return subprocess.run([str(PATRONICTL), "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)

    def run(self, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        """patronictl's stdout; the test fails (with stderr) on a non-zero exit."""
        out = self.call(*args, timeout=timeout)
        assert out.returncode == 0, (
            f"patronictl {' '.join(args)} exited {out.returncode}\n"
            f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}")
        return out.stdout


def need(ctl: Ctl | None) -> Ctl:
    """The fixture's Ctl; FAIL (in the test itself, not as a setup error) without patronictl."""
    if ctl is None:
        pytest.fail(MISSING)
    return ctl


def one_primary(c: LoopbackCluster) -> str | None:
    """The primary's name once exactly one member is primary and the others are replicas."""
    roles = c.roles()
    primaries = [n for n, (p, _) in roles.items() if p == 200]
    replicas = [n for n, (_, r) in roles.items() if r == 200]
    if len(roles) == len(c.nodes) and len(primaries) == 1 and len(replicas) == len(roles) - 1:
        return primaries[0]
    return None


@contextmanager
def ctl_cluster(prefix: str, scope: str, **cluster_args: Any) -> Iterator[Ctl | None]:
    """A booted 3-node loopback cluster and a patronictl config for it; None (and nothing
    booted) without patronictl, so each test can fail on its own. Always cleaned up."""
    if not os.access(PATRONICTL, os.X_OK):
        yield None
        return
    # Under /tmp, not pytest's tmp_path: PostgreSQL must traverse the path to its data dir.
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    c = LoopbackCluster(base, size=3, scope=scope, **cluster_args)
    try:
        c.start_all()
        c.wait_until(lambda: one_primary(c), BOOT_TIMEOUT, "one primary and two replicas")
        assert c.etcd is not None
        home = base / "home"
        home.mkdir()
        config = base / "patronictl.yml"
        # What an operator writes: the DCS, the scope and the namespace. No REST settings:
        # patronictl must find every API through the api_url we publish.
        config.write_text(yaml.safe_dump({
            "scope": c.scope,
            "namespace": "/service/",
            "etcd3": {"hosts": [c.etcd.endpoint]},
        }))
        yield Ctl(c, config, home)
    finally:
        c.close()
        shutil.rmtree(base, ignore_errors=True)


def table_lines(text: str) -> list[list[str]]:
    """The `| a | b |` lines of a prettytable, cells stripped; the first is the header."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def table_header(text: str) -> list[str]:
    lines = table_lines(text)
    return lines[0] if lines else []


def table_rows(text: str) -> list[list[str]]:
    return table_lines(text)[1:]
