"""A lab whose owner (a test session) was killed is removed by the next session's sweep:
its namespaces, shared memory and lab dir. A lab whose owner runs, or that has no owner
(`pgwarden-lab up`), is left alone. Real namespaces; no agents (the sweep is `down`)."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgwarden.core.shm import shm_path
from pgwarden.lab import netns
from pgwarden.lab.common import process_identity
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import random_prefix
from pgwarden.lab.labsweep import sweep_abandoned

pytestmark = pytest.mark.lab


@pytest.fixture
def owner() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def _half_built(made: list[Lab], owner_pid: int | None) -> Lab:
    """A lab as a killed session leaves it: lab.json, a namespace, an agent's shared memory.
    Listed in `made` before anything is built, so the test removes it even half made."""
    prefix = "pgws" + random_prefix()[4:]
    lab = Lab(prefix, hosts=1, scope=f"lab{prefix}")
    made.append(lab)
    if owner_pid is not None:
        lab.state["owner"] = process_identity(owner_pid)
    lab.lab_dir.mkdir(parents=True)
    lab.state["phase"] = "building"
    lab._save()
    netns.add(lab.ns("n1"))
    Path(shm_path(lab.scope, "n1")).write_bytes(b"\0" * 64)
    return lab


def _gone(lab: Lab) -> bool:
    return (not netns.exists(lab.ns("n1")) and not os.path.exists(shm_path(lab.scope, "n1"))
            and not lab.lab_dir.exists())


def test_an_abandoned_lab_is_swept_and_a_live_or_unowned_one_is_not(
        lab_ready: None, owner: subprocess.Popen[bytes]) -> None:
    made: list[Lab] = []
    dead_owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = _half_built(made, owner.pid)
        unowned = _half_built(made, None)
        abandoned = _half_built(made, dead_owner.pid)
        dead_owner.kill()  # the killed test session
        dead_owner.wait()
        swept = sweep_abandoned(log=print)
        assert abandoned.prefix in swept and _gone(abandoned)
        assert live.prefix not in swept and netns.exists(live.ns("n1"))
        assert unowned.prefix not in swept and netns.exists(unowned.ns("n1"))
        owner.kill()
        owner.wait()
        assert live.prefix in sweep_abandoned() and _gone(live)
    finally:
        dead_owner.kill()
        dead_owner.wait()
        for lab in made:
            _remove(lab)


def _remove(lab: Lab) -> None:
    """Everything _half_built made, whatever state the test left it in."""
    with contextlib.suppress(Exception):
        if lab.lab_dir.exists():
            Lab.load(lab_dir=lab.lab_dir).down()
    with contextlib.suppress(Exception):
        if netns.exists(lab.ns("n1")):
            netns.delete(lab.ns("n1"))
    Path(shm_path(lab.scope, "n1")).unlink(missing_ok=True)
    shutil.rmtree(lab.lab_dir, ignore_errors=True)
