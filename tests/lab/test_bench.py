"""The benchmark code path on a real lab: one host-crash run (Python API) and one postmaster
crash run (the CLI, with --json), each checked for present, positive measurements and no
acknowledged write missing. Tight timing (ttl 3) keeps the module under a minute and a half."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from pgwarden.lab.bench import run_bench
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import random_prefix

pytestmark = pytest.mark.lab

TIMING = {"ttl": 3, "loop_wait": 1, "retry_timeout": 1, "safety_margin": 1}


@pytest.fixture(scope="module")
def lab(lab_ready: None) -> Iterator[Lab]:
    prefix = "pgwt" + random_prefix()[4:]
    lab = Lab(prefix, hosts=3, scope=f"lab{prefix}", owned=True, **TIMING)
    try:
        lab.up(wait=120)
        yield lab
    finally:
        lab.down()


def test_bench_failover_one_run(lab: Lab) -> None:
    t = time.monotonic()
    out = run_bench(lab, "failover", 1, print)
    took = time.monotonic() - t
    (run,) = out["runs"]
    assert run["new"] != run["old"] and run["write_node"] == run["new"]
    for key in ("crash_to_write", "crash_to_api", "crash_to_vip", "rejoin"):
        assert run[key] is not None and 0 < run[key] < 40, (key, run)
    # the lease must expire first: nothing can take over before ttl minus one renewal
    assert run["crash_to_api"] >= TIMING["ttl"] - 1
    assert run["crash_to_vip"] >= run["crash_to_api"] - 0.1
    assert run["acked"] >= 200
    assert run["missing"] == 0, run["missing_rows"]
    assert set(run["steps"]) >= {"leader_gone", "lock_taken", "vip_held"}
    s = out["summary"]["crash_to_write"]
    assert s["n"] == 1 and s["min"] == s["median"] == s["max"] == run["crash_to_write"]
    assert out["settings"]["ttl"] == 3 and out["settings"]["client"]["connect_timeout"] == 1.0
    # the crashed host rejoined: one primary, two streaming replicas
    assert lab.healthy() == run["new"]
    print(f"\nfailover run in {took:.1f} s: write after {run['crash_to_write']:.2f} s")


def test_bench_pg_crash_cli_one_run(lab_ready: None, tmp_path: Path) -> None:
    out_file = tmp_path / "pg-crash.json"
    prefix = "pgwt" + random_prefix()[4:]
    cmd = [sys.executable, "-m", "pgwarden.lab", "bench", "pg-crash", "--runs", "1",
           "--prefix", prefix, "--json", str(out_file)]
    for k, v in TIMING.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "postmaster killed -> first write" in proc.stdout
    out = json.loads(out_file.read_text())
    (run,) = out["runs"]
    assert 0 < run["crash_to_write"] < 30
    assert run["in_place"] and run["new"] == run["old"]  # restarted in place (default timeout)
    assert run["acked"] >= 200 and run["missing"] == 0, run["missing_rows"]
    assert out["summary"]["crash_to_write"]["n"] == 1
    # the CLI tore its lab down
    assert not Path(f"/tmp/pgwarden-lab-{prefix}").exists()
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in ns


def test_bench_switchover_cli_one_run(lab_ready: None, tmp_path: Path) -> None:
    """One planned switchover through the CLI: the report and the JSON parse, the switchover
    landed on the named candidate, and no acknowledged write is missing. No timing bounds:
    the figures belong in docs/benchmarks.md, not in a pass/fail on a shared machine."""
    out_file = tmp_path / "switchover.json"
    prefix = "pgwt" + random_prefix()[4:]
    cmd = [sys.executable, "-m", "pgwarden.lab", "bench", "switchover", "--runs", "1",
           "--prefix", prefix, "--json", str(out_file)]
    for k, v in TIMING.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for label in ("longest gap between acknowledged writes", "POST /switchover -> answer",
                  "acknowledged writes missing"):
        assert label in proc.stdout, proc.stdout
    out = json.loads(out_file.read_text())
    assert out["kind"] == "switchover"
    (run,) = out["runs"]
    assert run["status"] == 200 and run["answer"] == f'Successfully switched over to "{run["candidate"]}"'
    assert run["old"] != run["candidate"]
    # the named candidate took the writes and is the one primary, the old one follows it
    assert run["switched"] and run["new"] == run["primary_after"] == run["candidate"], run
    assert run["acked"] >= 200 and run["missing"] == 0, run["missing_rows"]
    for key in ("gap", "api", "first_write", "rejoin"):
        assert isinstance(run[key], float), (key, run)
    assert out["summary"]["gap"]["n"] == 1 and out["summary"]["missing"]["max"] == 0
    assert not Path(f"/tmp/pgwarden-lab-{prefix}").exists()
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in ns
