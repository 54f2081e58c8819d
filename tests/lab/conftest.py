"""The network-namespace lab suite: root, iproute2, etcd and PostgreSQL 15 are required."""
from __future__ import annotations

import os
import shutil

import pytest

from pgwarden.lab.common import PG_BIN
from pgwarden.lab.etcd import ETCD_BIN
from pgwarden.lab.labsweep import sweep_abandoned


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: runs a pgwarden cluster in network namespaces (root)")


def lab_missing() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if not os.access(ETCD_BIN, os.X_OK):
        return f"{ETCD_BIN} is not installed"
    if not os.access(os.path.join(PG_BIN, "postgres"), os.X_OK):
        return "PostgreSQL 15 is not installed"
    return None


@pytest.fixture(scope="session")
def lab_ready() -> None:
    reason = lab_missing()
    if reason:
        pytest.skip(reason)
    # what a killed earlier session left (its teardown never ran) would hold addresses,
    # namespaces and shared memory: remove it before building new labs
    sweep_abandoned(log=print)
