"""The lab's names and its state file: prefixes, subnets, directories, lab.json, discovery.

Everything a CLI call needs to find a lab started by another process lives in
<labdir>/lab.json (default labdir /tmp/pgwarden-lab-P); this module builds, reads and finds it.
Nothing here touches a namespace.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import string
import time
from pathlib import Path
from typing import Any

STATE_FILE = "lab.json"
LOCK_FILE = "lab.lock"
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
WHATS = ("agent", "postgres", "all", "supervisor", "lease-worker", "postgres-worker",
         "api-worker", "watchdog-worker", "network-worker")
# the agent's workers (supervisor/agent.py WORKERS), by the names its supervisor publishes
AGENT_WORKERS = ("lease", "postgres", "api", "watchdog", "network")
WATCHDOG_MODES = ("off", "automatic", "required")
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


def prefix_of(lab_dir: Path) -> str:
    return lab_dir.name.removeprefix("pgwarden-lab-")


def emulator_available() -> bool:
    try:
        return importlib.util.find_spec(EMULATOR_MODULE) is not None
    except ImportError:
        return False


def find_labs(base: Path = BASE_DIR) -> list[Path]:
    return sorted(p.parent for p in base.glob("pgwarden-lab-*/" + STATE_FILE))


def find_lab_dir(prefix: str | None, lab_dir: str | Path | None) -> Path:
    """The lab directory named by --lab-dir, by --prefix, or the only lab present."""
    if lab_dir is not None:
        return Path(lab_dir)
    if prefix:
        return lab_dir_for(prefix)
    labs = find_labs()
    if len(labs) != 1:
        names = ", ".join(prefix_of(p) for p in labs)
        raise LabError("no lab found: run `up` first" if not labs else
                       f"several labs ({names}): name one with --prefix")
    return labs[0]


def check_options(prefix: str, hosts: int, watchdog: str) -> None:
    if not PREFIX_RE.match(prefix):
        raise LabError(f"bad prefix {prefix!r}: 1-12 lower-case letters and digits, "
                       "starting with a letter (no '-')")
    if not 1 <= hosts <= MAX_DB_HOSTS:
        raise LabError(f"--hosts must be 1..{MAX_DB_HOSTS}, got {hosts}")
    if watchdog not in WATCHDOG_MODES:
        raise LabError(f"watchdog mode must be off, automatic or required, got {watchdog!r}")


def new_state(prefix: str, hosts: int, lab_dir: Path, *, scope: str, options: dict[str, Any],
              python: str) -> dict[str, Any]:
    """A fresh lab.json document: names, addresses and options, nothing started yet."""
    a, b = subnet_for(prefix)
    net = f"10.{a}.{b}"

    def entry(name: str, kind: str, octet: int) -> dict[str, Any]:
        return {"name": name, "kind": kind, "ns": f"{prefix}-{name}",
                "address": f"{net}.{octet}", "veth": f"v-{name}", "dir": str(lab_dir / name)}

    host_map = {f"n{i}": entry(f"n{i}", "db", i) for i in range(1, hosts + 1)}
    host_map["dcs"] = entry("dcs", "dcs", DCS_OCTET)
    host_map["client"] = entry("client", "client", CLIENT_OCTET)
    return {
        "version": 1,
        "prefix": prefix,
        "lab_dir": str(lab_dir),
        "phase": "new",
        "scope": scope,
        "subnet": f"{net}.0/24",
        "vip": f"{net}.{VIP_OCTET}/24",
        "bridge_ns": f"{prefix}-br",
        "hosts": host_map,
        "ports": {"restapi": API_PORT, "postgresql": PG_PORT,
                  "etcd_client": ETCD_CLIENT_PORT, "etcd_peer": ETCD_PEER_PORT},
        "options": options,
        "watchdog_mode": options["watchdog"],
        "emulator": False,
        "python": python,
        "procs": {},
        "crashed": [],
        "partitioned": [],
        "frozen": {},
        "writer": None,
        "created": time.time(),
    }


def db_names(state: dict[str, Any]) -> list[str]:
    return [n for n, h in state["hosts"].items() if h["kind"] == "db"]


def read_state(lab_dir: Path) -> dict[str, Any]:
    path = lab_dir / STATE_FILE
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError) as e:
        raise LabError(f"cannot read {path}: {e}") from None


def write_state(lab_dir: Path, state: dict[str, Any]) -> None:
    """Replace lab.json atomically (a concurrent reader sees the old or the new document)."""
    path = lab_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)
