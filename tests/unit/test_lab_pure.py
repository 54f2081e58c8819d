"""The network lab's pure parts: names, addresses, the agent config it writes, the writer's
outcome rules. No root, no namespaces."""
from __future__ import annotations

from pathlib import Path

import psycopg
import psycopg.errors
import pytest
import yaml

from pgwarden.core.config import load_config, validate_file
from pgwarden.lab.netlab import PREFIX_RE, Lab, LabError, random_prefix, subnet_for
from pgwarden.lab.writer import classify


def test_prefixes_and_subnets() -> None:
    for _ in range(50):
        p = random_prefix()
        assert PREFIX_RE.match(p) and p.startswith("pgwl") and len(p) == 8
    assert subnet_for("pgwlabcd") == subnet_for("pgwlabcd")
    a, b = subnet_for("pgwlabcd")
    assert 64 <= a < 192 and 0 <= b < 256
    assert len({subnet_for(f"pgwl{i:04d}") for i in range(200)}) > 150


@pytest.mark.parametrize("bad", ["a-b", "Pgwl", "1abc", "", "abcdefghijklm"])
def test_bad_prefixes_are_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(LabError):
        Lab(bad or "-", lab_dir=tmp_path)


def test_names_and_addresses(tmp_path: Path) -> None:
    lab = Lab("pgwltest", hosts=4, lab_dir=tmp_path)
    a, b = subnet_for("pgwltest")
    assert lab.db_hosts == ["n1", "n2", "n3", "n4"]
    assert list(lab.hosts) == ["n1", "n2", "n3", "n4", "dcs", "client"]
    assert lab.ns("n2") == "pgwltest-n2" and lab.state["bridge_ns"] == "pgwltest-br"
    assert lab.address("n3") == f"10.{a}.{b}.3"
    assert lab.address("dcs") == f"10.{a}.{b}.200"
    assert lab.address("client") == f"10.{a}.{b}.201"
    assert lab.address("vip") == lab.vip == f"10.{a}.{b}.100"
    assert lab.state["vip"] == f"10.{a}.{b}.100/24"
    assert lab.address("10.1.2.3") == "10.1.2.3"
    assert {h["veth"] for h in lab.hosts.values()} == {
        "v-n1", "v-n2", "v-n3", "v-n4", "v-dcs", "v-client"}
    assert all(len(h["veth"]) <= 15 for h in lab.hosts.values())
    with pytest.raises(LabError):
        lab.address("n9")


def test_the_agent_config_is_valid_and_complete(tmp_path: Path) -> None:
    lab = Lab("pgwltest", hosts=3, lab_dir=tmp_path, ttl=12, loop_wait=2, retry_timeout=4,
              primary_start_timeout=30, watchdog="required", safety_margin=4, sync=True)
    lab.state["watchdog_mode"] = "required"
    for h in lab.db_hosts:
        lab.host_dir(h).mkdir(parents=True)
        lab._write_config(h)
    path = lab.config_path("n2")
    assert validate_file(str(path)) == []
    cfg = load_config(str(path))
    addr = lab.address("n2")
    assert cfg.scope == "lab" and cfg.name == "n2"
    assert str(cfg.restapi.listen) == f"{addr}:8008"
    assert str(cfg.postgresql.connect_address) == f"{addr}:5432"
    assert cfg.postgresql.listen_addresses == "0.0.0.0"  # the VIP must be served too
    assert [str(h) for h in cfg.etcd3_hosts] == [f"{lab.address('dcs')}:2379"]
    assert cfg.vip is not None and cfg.vip.address == lab.vip and cfg.vip.prefixlen == 24
    assert cfg.vip.interface == "eth0"
    assert cfg.watchdog.mode == "required" and cfg.watchdog.safety_margin == 4
    assert cfg.watchdog.device == str(lab.host_dir("n2") / "watchdog")
    dyn = cfg.bootstrap_dcs
    assert (dyn.ttl, dyn.loop_wait, dyn.retry_timeout) == (12, 2, 4)
    assert dyn.primary_start_timeout == 30 and dyn.use_pg_rewind
    params = cfg.postgresql.parameters
    assert params["synchronous_standby_names"] == "ANY 1 (n1, n2, n3)"
    assert params["pgwarden_lab.node"] == "n2"
    assert params["shared_buffers"] == "16MB" and params["wal_keep_size"] == "64MB"
    assert int(params["max_connections"]) == 50
    subnet = lab.state["subnet"]
    assert f"host all all {subnet} scram-sha-256" in cfg.postgresql.pg_hba
    assert f"host replication replicator {subnet} scram-sha-256" in cfg.postgresql.pg_hba
    assert "local all all trust" in cfg.postgresql.pg_hba
    raw = yaml.safe_load(path.read_text())
    assert raw["postgresql"]["use_pg_rewind"] is True
    assert raw["postgresql"]["remove_data_directory_on_rewind_failure"] is True
    assert lab.state["options"]["watchdog_timeout"] == 8  # ttl - safety_margin


@pytest.mark.parametrize(("sqlstate", "conn_ok", "outcome"), [
    ("25006", True, "failed"),    # read-only transaction: a replica said no
    ("23505", True, "failed"),
    ("25006", False, "unknown"),  # the connection broke meanwhile: cannot tell
    ("57P01", True, "unknown"),   # admin shutdown: the commit may have happened
    ("08006", True, "unknown"),
    ("XX000", True, "unknown"),
    (None, True, "unknown"),      # no answer at all
])
def test_writer_outcomes(sqlstate: str | None, conn_ok: bool, outcome: str) -> None:
    error = psycopg.OperationalError("boom") if sqlstate is None else \
        psycopg.errors.lookup(sqlstate)("boom")
    assert error.sqlstate == sqlstate
    assert classify(error, conn_ok) == outcome
