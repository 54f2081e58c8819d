"""Compatibility names: the lab used to be this one module.

`pgwarden-lab` is installed as `pgwarden.lab.netlab:main`, and tests import `Lab` and the
helpers from here; the code now lives in one file per job (see lab/lab.py and lab/cli.py).
"""
from __future__ import annotations

import sys

from pgwarden.lab.cli import main
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import (
    API_PORT,
    BASE_DIR,
    BRIDGE,
    CLIENT_OCTET,
    DCS_OCTET,
    EMULATOR_MODULE,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    MAX_DB_HOSTS,
    PG_PORT,
    PREFIX_RE,
    STATE_FILE,
    VIP_OCTET,
    WHATS,
    LabError,
    emulator_available,
    find_labs,
    lab_dir_for,
    random_prefix,
    subnet_for,
)
from pgwarden.lab.probe_client import Probe

__all__ = [
    "API_PORT", "BASE_DIR", "BRIDGE", "CLIENT_OCTET", "DCS_OCTET", "EMULATOR_MODULE",
    "ETCD_CLIENT_PORT", "ETCD_PEER_PORT", "MAX_DB_HOSTS", "PG_PORT", "PREFIX_RE", "STATE_FILE",
    "VIP_OCTET", "WHATS", "Lab", "LabError", "Probe", "emulator_available", "find_labs",
    "lab_dir_for", "main", "random_prefix", "subnet_for",
]

if __name__ == "__main__":
    sys.exit(main())
