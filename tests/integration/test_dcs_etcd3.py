"""Etcd3DCS against a real etcd: the atomicity contract of dcs/base.py, outages, Patroni's layout.

Each test starts its own etcd on free ports in its tmp dir; fixtures always stop it.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pgwarden.core.errors import DCSError
from pgwarden.dcs.etcd3 import Etcd3DCS
from pgwarden.dcs.model import ClusterView, dumps
from pgwarden.lab.etcd import EtcdProcess
from pgwarden.lab.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PREFIX = "/service/demo/"
MakeDCS = Callable[..., Etcd3DCS]


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    proc = EtcdProcess(tmp_path / "etcd")
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def make_dcs(etcd: EtcdProcess) -> Iterator[MakeDCS]:
    made: list[Etcd3DCS] = []

    def make(ttl: int = 10, timeout: float = 1.0, hosts: list[Any] | None = None) -> Etcd3DCS:
        dcs = Etcd3DCS(hosts or [etcd.endpoint], PREFIX, ttl, timeout)
        made.append(dcs)
        return dcs

    yield make
    for dcs in made:
        dcs.close()


def raw_client(etcd: EtcdProcess) -> Any:
    """A plain python-etcd3 client: etcd as Patroni and etcdctl users see it."""
    import etcd3  # type: ignore[import-untyped]  # after pgwarden.dcs.etcd3 set the protobuf switch

    return etcd3.client("127.0.0.1", etcd.client_port, timeout=2)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def race(calls: list[Callable[[], bool]]) -> list[bool]:
    """Run the calls at the same instant from separate threads."""
    barrier = threading.Barrier(len(calls))

    def go(call: Callable[[], bool]) -> bool:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


class Recorder:
    """An on_change callback keeping every view it was given, in order."""

    def __init__(self) -> None:
        self.views: queue.Queue[tuple[float, ClusterView]] = queue.Queue()
        self.seen: list[ClusterView] = []

    def __call__(self, view: ClusterView) -> None:
        self.views.put((time.monotonic(), view))
        self.seen.append(view)

    def wait_for(self, predicate: Callable[[ClusterView], bool], timeout: float) -> float:
        """The time the first matching view arrived."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, view = self.views.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching view within {timeout} s") from None
            if predicate(view):
                return at


def synced_watch(dcs: Etcd3DCS) -> Recorder:
    rec = Recorder()
    dcs.start_watch(rec)
    wait_until(lambda: dcs.cached_cluster() is not None, 5, "the watch is in sync")
    return rec


# -- create-if-absent and compare-and-swap ---------------------------------------------
def test_initialize_race_has_exactly_one_winner(make_dcs: MakeDCS) -> None:
    a, b = make_dcs(), make_dcs()
    for round_ in range(5):
        won = race([lambda: a.initialize("", create=True), lambda: b.initialize("", create=True)])
        assert sorted(won) == [False, True], f"round {round_}: {won}"
        version = a.read_cluster().initialize_version
        assert not a.initialize("7301", create=False, version=version + 100)
        assert not a.delete_initialize(version + 100)
        assert a.initialize("7301", create=False, version=version)
        assert a.read_cluster().initialize == "7301"
        assert not b.delete_initialize(version)  # stale: a rewrote it
        assert b.delete_initialize(b.read_cluster().initialize_version)
        assert b.read_cluster().initialize is None


def test_leader_race_has_exactly_one_winner(make_dcs: MakeDCS) -> None:
    a, b = make_dcs(), make_dcs()
    a.grant_lease(), b.grant_lease()
    for round_ in range(5):
        won = race([lambda: a.acquire_leader("a"), lambda: b.acquire_leader("b")])
        assert sorted(won) == [False, True], f"round {round_}: {won}"
        winner, dcs = ("a", a) if won[0] else ("b", b)
        view = a.read_cluster()
        assert (view.leader, view.leader_lease) == (winner, dcs.lease_id)
        assert not dcs.acquire_leader(winner)  # create-if-absent, even for the holder
        assert dcs.release_leader(winner)


@pytest.mark.parametrize("key", ["config", "failover", "sync"])
def test_cas_refuses_a_stale_version(make_dcs: MakeDCS, key: str) -> None:
    a, b = make_dcs(), make_dcs()
    setter = {"config": Etcd3DCS.set_config, "failover": Etcd3DCS.set_failover,
              "sync": Etcd3DCS.set_sync}[key]
    assert setter(a, {"v": 1}, 0)
    assert not setter(b, {"v": 2}, 0)  # version 0 is create-if-absent
    version = getattr(a.read_cluster(), key).version
    assert setter(b, {"v": 3}, version)
    assert not setter(a, {"v": 4}, version)  # a's version is stale now
    current = getattr(a.read_cluster(), key)
    assert current.value == {"v": 3} and current.version > version
    if key == "failover":
        assert not a.delete_failover(version)
        assert a.delete_failover(current.version)
        assert a.read_cluster().failover.version == 0


# -- the lease ----------------------------------------------------------------------
def test_lease_expiry_removes_member_and_leader_together(make_dcs: MakeDCS) -> None:
    agent, observer = make_dcs(ttl=2), make_dcs()
    rec = synced_watch(observer)
    agent.grant_lease()
    agent.touch_member("n1", {"role": "primary"})
    assert agent.acquire_leader("n1")
    wait_until(lambda: observer.read_cluster().leader == "n1", 2, "the leader key is written")
    # stop refreshing: the lease (TTL 2 s) must take both keys with it
    wait_until(lambda: not (v := observer.read_cluster()).members and v.leader is None, 8,
               "the member and leader keys expire")
    rec.wait_for(lambda v: v.leader is None, 2)
    both = next(i for i, v in enumerate(rec.seen) if v.leader and "n1" in v.members)
    for v in rec.seen[both:]:
        assert (v.leader is None) == ("n1" not in v.members), "one key outlived the other"
    assert not agent.refresh_lease()  # etcd answers TTL 0 for an expired lease
    assert agent.lease_id == 0
    agent.touch_member("n1", {"role": "replica"})  # grants a new lease by itself
    assert agent.lease_id != 0 and observer.read_cluster().members["n1"].lease == agent.lease_id


def test_ensure_leader_renews_then_reports_the_loss(etcd: EtcdProcess, make_dcs: MakeDCS) -> None:
    a, b = make_dcs(), make_dcs()
    a.grant_lease(), b.grant_lease()
    assert a.acquire_leader("a")
    assert a.ensure_leader("a") and a.refresh_lease()
    new_lease = a.grant_lease()  # e.g. after a TTL change: the key must follow the lease
    assert a.ensure_leader("a")
    assert a.read_cluster().leader_lease == new_lease
    with raw_client(etcd) as raw:
        raw.delete(PREFIX + "leader")  # as an operator might
    assert a.read_cluster().leader is None
    assert a.ensure_leader("a")  # absent: re-created (base.py contract)
    assert a.read_cluster().leader == "a"
    assert a.release_leader("a") and b.acquire_leader("b")
    assert not a.ensure_leader("a")
    view = a.read_cluster()
    assert (view.leader, view.leader_lease) == ("b", b.lease_id)


def test_release_leader_only_deletes_our_own_key(make_dcs: MakeDCS) -> None:
    a, b = make_dcs(), make_dcs()
    b.grant_lease()
    assert b.acquire_leader("b")
    assert not a.release_leader("a")
    assert a.read_cluster().leader == "b"
    assert b.release_leader("b")
    assert a.read_cluster().leader is None
    assert not b.release_leader("b")


# -- the watch ----------------------------------------------------------------------
def test_watch_sees_the_leader_key_deletion_within_a_second(make_dcs: MakeDCS) -> None:
    watcher, holder = make_dcs(), make_dcs()
    rec = synced_watch(watcher)
    holder.grant_lease()
    assert holder.acquire_leader("b")
    rec.wait_for(lambda v: v.leader == "b", 2)
    sent = time.monotonic()
    assert holder.release_leader("b")
    arrived = rec.wait_for(lambda v: v.leader is None, 2)
    assert arrived - sent < 1.0
    cached = watcher.cached_cluster()
    assert cached is not None and cached.leader is None
    assert cached.revision == watcher.read_cluster().revision


def test_watch_survives_an_etcd_restart(etcd: EtcdProcess, make_dcs: MakeDCS) -> None:
    watcher, writer = make_dcs(), make_dcs()
    rec = synced_watch(watcher)
    etcd.kill()
    wait_until(lambda: watcher.cached_cluster() is None, 2, "the cache is marked stale")
    etcd.start()
    assert writer.set_config({"ttl": 30}, 0)
    rec.wait_for(lambda v: v.config.value == {"ttl": 30}, 5)
    writer.set_history([[1, 2, "r", "t", "n1"]])
    rec.wait_for(lambda v: bool(v.history.value), 2)


def test_watch_does_not_burn_cpu_while_etcd_is_down(etcd: EtcdProcess, make_dcs: MakeDCS) -> None:
    watcher = make_dcs()
    synced_watch(watcher)
    etcd.stop()
    time.sleep(0.5)
    cpu = time.process_time()
    time.sleep(3)
    used = time.process_time() - cpu
    assert used < 0.5, f"{used:.2f} s of CPU in 3 s while etcd is down"
    assert watcher.cached_cluster() is None


def test_watch_relists_when_its_start_revision_was_compacted(etcd: EtcdProcess, make_dcs: MakeDCS) -> None:
    dcs = make_dcs()
    for i in range(5):
        dcs.set_history([[i]])
    with raw_client(etcd) as raw:
        raw.compact(dcs.read_cluster().revision)
    real_list, calls = dcs._list, []

    def list_once_stale(deadline: float) -> tuple[dict[str, tuple[str, int, int]], int]:
        items, revision = real_list(deadline)
        calls.append(revision)
        return items, (2 if len(calls) == 1 else revision)  # as if listed long ago

    dcs._list = list_once_stale  # type: ignore[method-assign]
    dcs.start_watch(lambda _view: None)
    # etcd confirms the watch first and reports the compaction ~100 ms later
    wait_until(lambda: len(calls) == 2 and dcs.cached_cluster() is not None, 5,
               "the watch lists again after the compaction notice")
    dcs.set_history([["after"]])
    wait_until(lambda: (c := dcs.cached_cluster()) is not None and c.history.value == [["after"]], 2,
               "the re-listed watch delivers new events")


# -- outages ------------------------------------------------------------------------
def every_call(dcs: Etcd3DCS) -> dict[str, Callable[[], Any]]:
    return {
        "read_cluster": dcs.read_cluster,
        "grant_lease": dcs.grant_lease,
        "refresh_lease": dcs.refresh_lease,
        "touch_member": lambda: dcs.touch_member("a", {"role": "primary"}),
        "delete_member": lambda: dcs.delete_member("a"),
        "acquire_leader": lambda: dcs.acquire_leader("a"),
        "ensure_leader": lambda: dcs.ensure_leader("a"),
        "release_leader": lambda: dcs.release_leader("a"),
        "initialize": lambda: dcs.initialize("1", create=True),
        "delete_initialize": lambda: dcs.delete_initialize(3),
        "set_config": lambda: dcs.set_config({}, 0),
        "set_failover": lambda: dcs.set_failover({}, 0),
        "delete_failover": lambda: dcs.delete_failover(1),
        "set_sync": lambda: dcs.set_sync({}, 0),
        "set_history": lambda: dcs.set_history([]),
        "set_status": lambda: dcs.set_status({}),
        "delete_cluster": dcs.delete_cluster,
    }


def timed(call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def test_every_call_fails_within_its_timeout_while_etcd_is_frozen(
    etcd: EtcdProcess, make_dcs: MakeDCS
) -> None:
    timeout = 1.0
    dcs = make_dcs(timeout=timeout)
    dcs.grant_lease()
    assert dcs.acquire_leader("a")
    synced_watch(dcs)
    etcd.freeze()
    try:
        fresh = make_dcs(timeout=timeout)  # a channel that never reached etcd before the freeze
        calls = every_call(dcs) | {"fresh read_cluster": fresh.read_cluster}
        with ThreadPoolExecutor(len(calls)) as pool:
            results = dict(zip(calls, pool.map(timed, calls.values())))
        for name, (elapsed, exc) in results.items():
            assert isinstance(exc, DCSError), f"{name} gave {exc!r}"
            assert "\n" not in str(exc)
            assert elapsed < timeout + 0.5, f"{name} took {elapsed:.2f} s"
        # a frozen etcd keeps the TCP connection open: the watch must notice by itself
        wait_until(lambda: dcs.cached_cluster() is None, timeout + 3, "the watch notices the freeze")
    finally:
        etcd.thaw()
    for name, call in every_call(dcs).items():
        assert timed(call)[1] is None, name
    wait_until(lambda: dcs.cached_cluster() is not None, 5, "the watch resyncs after the thaw")


def test_a_dead_first_endpoint_fails_over_to_the_next(etcd: EtcdProcess, make_dcs: MakeDCS) -> None:
    dcs = make_dcs(hosts=[("127.0.0.1", free_port()), etcd.endpoint])
    assert dcs.target.startswith("ipv4:")
    assert dcs.set_config({"ttl": 30}, 0)
    assert dcs.read_cluster().config.value == {"ttl": 30}


# -- Patroni's layout -----------------------------------------------------------------
def test_keys_and_values_are_patronis(etcd: EtcdProcess, make_dcs: MakeDCS) -> None:
    dcs = make_dcs()
    lease = dcs.grant_lease()
    member = {"conn_url": "postgres://10.0.0.2:5432/postgres", "api_url": "http://10.0.0.2:8008/patroni",
              "state": "running", "role": "primary", "version": "4.1.4", "xlog_location": 50331800,
              "timeline": 1, "tags": {}}
    dcs.touch_member("n1", member)
    assert dcs.acquire_leader("n1")
    assert dcs.initialize("7301234567890123456", create=True)
    assert dcs.set_config({"ttl": 30, "loop_wait": 10}, 0)
    assert dcs.set_sync({"leader": "n1", "sync_standby": None}, 0)
    dcs.set_history([[1, 25165984, "no recovery target specified", "2026-01-01T10:00:00+00:00", "n1"]])
    dcs.set_status({"optime": 50331800, "slots": {}, "retain_slots": ["n1"]})
    with raw_client(etcd) as raw:
        stored = {meta.key.decode(): (value.decode(), meta.lease_id) for value, meta in raw.get_prefix(PREFIX)}
        assert stored == {
            PREFIX + "members/n1": (dumps(member), lease),
            PREFIX + "leader": ("n1", lease),
            PREFIX + "initialize": ("7301234567890123456", 0),
            PREFIX + "config": ('{"ttl":30,"loop_wait":10}', 0),
            PREFIX + "sync": ('{"leader":"n1","sync_standby":null}', 0),
            PREFIX + "history": ('[[1,25165984,"no recovery target specified","2026-01-01T10:00:00+00:00","n1"]]', 0),
            PREFIX + "status": ('{"optime":50331800,"slots":{},"retain_slots":["n1"]}', 0),
        }
        assert '"conn_url":"postgres://10.0.0.2:5432/postgres","api_url"' in stored[PREFIX + "members/n1"][0]
        # what Patroni itself may leave behind reads the same way
        raw.put(PREFIX + "failover", "n1:n2")
        raw.put(PREFIX + "members/n2", '{"role":"replica","state":"streaming","xlog_location":50331000}')
        raw.put(PREFIX + "members/n3", "garbage")
    view = dcs.read_cluster()
    assert view.failover.value == {"leader": "n1", "member": "n2"}
    assert view.members["n2"].xlog_location == 50331000 and view.members["n2"].lease == 0
    assert "n3" not in view.members and len(view.problems) == 1
    assert (view.leader, view.leader_lease, view.initialize) == ("n1", lease, "7301234567890123456")
    assert view.config.value == {"ttl": 30, "loop_wait": 10} and view.optime == 50331800
    dcs.delete_cluster()
    assert dcs.read_cluster() == ClusterView(revision=dcs.read_cluster().revision)
