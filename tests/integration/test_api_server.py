"""The real REST API server over a real shared-state block, checked with urllib.

No etcd or PostgreSQL needed: the sections are published as the workers would publish them
(docs/shared-state.md), for a primary and for a replica.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from pgwarden.core.clock import mono, wall
from pgwarden.core.config_model import (
    Config,
    Credentials,
    DynamicConfig,
    HostPort,
    PostgresConfig,
    RestApiConfig,
    WatchdogConfig,
)
from pgwarden.core.shm import SharedState
from pgwarden.core.version import PATRONI_COMPAT_VERSION, __version__
from pgwarden.core.wakeup import Wakeups
from pgwarden.dcs.model import ClusterView, Member, Versioned
from pgwarden.workers.api_server import ApiServer
from pgwarden.workers.context import WorkerContext

OPTIME = 0x4000060


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(name: str, port: int) -> Config:
    return Config(
        scope="demo", namespace="service", name=name,
        restapi=RestApiConfig(HostPort("127.0.0.1", port), HostPort("127.0.0.1", port)),
        etcd3_hosts=(HostPort("127.0.0.1", 2379),),
        bootstrap_dcs=DynamicConfig(),
        postgresql=PostgresConfig(
            data_dir="/var/lib/postgresql/data", bin_dir="/usr/lib/postgresql/16/bin",
            listen=HostPort("0.0.0.0", 5432), listen_addresses="0.0.0.0",
            connect_address=HostPort("10.0.0.1", 5432),
            superuser=Credentials("postgres"), replication=Credentials("replicator"),
        ),
        watchdog=WatchdogConfig(), tags={"zone": "a"}, vip=None,
    )


def cluster_view() -> dict[str, Any]:
    def m(name: str, role: str, ip: str, **data: Any) -> Member:
        return Member(name, {"conn_url": f"postgres://{ip}:5432/postgres",
                             "api_url": f"http://{ip}:8008/patroni", "state": "running",
                             "role": role, "version": __version__, "timeline": 5, **data})

    return ClusterView(
        initialize="7301234567890123456",
        config=Versioned({"ttl": 30, "loop_wait": 10}, 2),
        leader="n1",
        members={
            "n1": m("n1", "primary", "10.0.0.1", xlog_location=OPTIME),
            "n2": m("n2", "replica", "10.0.0.2", xlog_location=OPTIME, receive_lsn=OPTIME,
                    replay_lsn=OPTIME, replication_state="streaming"),
        },
        status=Versioned({"optime": OPTIME}, 4),
    ).to_dict()


def publish_node(shm: SharedState, role: str) -> None:
    """What the five writers publish on n1 (the primary) or n2 (a streaming replica)."""
    now = mono()
    primary = role == "primary"
    shm.publish("supervisor", {
        "state": role,
        "decision": {"action": "none", "reason": f"no action: I am a healthy {role}", "at": wall()},
        "intent": {"epoch": 1, "pg": {"role": role}, "lock": {"want": primary, "acquire_token": 1}},
        "dynamic": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576},
        "workers": {}, "paused": False, "shutdown": False, "started_at": wall() - 60, "last_cycle": now,
    })
    shm.publish("lease", {
        "connected": True, "last_error": None, "lease_id": 7, "ttl": 30,
        "renewed_at": now - 1, "lease_deadline": now + 29, "holds_leader": primary,
        "leader_checked_at": now - 1, "acquire_token_done": 1, "acquire_result": primary,
        "cluster": cluster_view(), "cluster_at": now - 1, "dcs_last_seen": wall() - 1, "ops_done": {},
    })
    xlog = ({"location": OPTIME} if primary else
            {"received_location": OPTIME, "replayed_location": OPTIME - 100,
             "replayed_timestamp": None, "paused": False})
    shm.publish("postgres", {
        "state": "running", "data_dir_state": "initialized", "running": True, "pid": 4242,
        "postmaster_start_time": "2026-01-02 10:00:00.1+00:00", "role": role, "timeline": 5,
        "server_version": 160004, "sysid": "7301234567890123456", "xlog": xlog,
        "wal_position": OPTIME, "replication_state": None if primary else "streaming",
        "replication": [], "following": None if primary else "n1", "operation": None,
        "last_error": None, "sampled_at": now, "epoch_done": 1, "pending_restart": False,
    })
    shm.publish("watchdog", {"mode": "automatic", "device": "/dev/watchdog", "armed": primary,
                             "timeout": 25, "last_feed": now, "failed": False, "reason": None})
    shm.publish("network", {"vip": "10.0.0.100", "interface": "eth0", "held": primary,
                            "last_change": now - 30, "reason": None})


class Node:
    def __init__(self, shm: SharedState, server: ApiServer) -> None:
        self.shm, self.server = shm, server
        self.base = f"http://127.0.0.1:{server.port}"

    def call(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, dict(e.headers), e.read()

    def json(self, path: str) -> tuple[int, Any]:
        code, headers, body = self.call(path)
        assert headers["Content-Type"] == "application/json"
        return code, orjson.loads(body)


@pytest.fixture(params=["primary", "replica"])
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    yield from _start(request.param)


@pytest.fixture
def primary() -> Iterator[Node]:
    yield from _start("primary")


@pytest.fixture
def replica() -> Iterator[Node]:
    yield from _start("replica")


def _start(role: str) -> Iterator[Node]:
    shm = SharedState.create(None)
    publish_node(shm, role)
    server = ApiServer(make_config("n1" if role == "primary" else "n2", free_port()), shm)
    server.start(poll_interval=0.05)
    try:
        yield Node(shm, server)
    finally:
        server.shutdown()
        shm.close()


HEALTH_PATHS = ["/", "/primary", "/read-write", "/master", "/leader", "/replica", "/read-only", "/health"]
EXPECTED = {
    "primary": {"/": 200, "/primary": 200, "/read-write": 200, "/master": 200, "/leader": 200,
                "/replica": 503, "/read-only": 200, "/health": 200, "/liveness": 200, "/readiness": 200},
    "replica": {"/": 503, "/primary": 503, "/read-write": 503, "/master": 503, "/leader": 503,
                "/replica": 200, "/read-only": 200, "/health": 200, "/liveness": 200, "/readiness": 200},
}


def role_of(node: Node) -> str:
    return "primary" if node.server.app.config.name == "n1" else "replica"


def test_get_health_paths_answer_with_the_status_json(node: Node) -> None:
    for path in HEALTH_PATHS:
        code, body = node.json(path)
        assert code == EXPECTED[role_of(node)][path], path
        assert body["role"] == role_of(node) and body["state"] == "running"
        assert body["patroni"] == {"version": PATRONI_COMPAT_VERSION, "scope": "demo", "name": node.server.app.config.name}


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_head_and_options_give_the_status_alone(node: Node, method: str) -> None:
    for path, expected in EXPECTED[role_of(node)].items():
        code, headers, body = node.call(path, method)
        assert (code, body, headers["Content-Length"]) == (expected, b"", "0"), (method, path)


def test_liveness_and_readiness_are_status_only_on_get(node: Node) -> None:
    for path in ("/liveness", "/readiness"):
        code, _, body = node.call(path)
        assert (code, body) == (EXPECTED[role_of(node)][path], b"")


def test_patroni_body_of_the_primary(primary: Node) -> None:
    code, body = primary.json("/patroni")
    assert code == 200
    assert body["xlog"] == {"location": OPTIME}
    assert body["timeline"] == 5 and body["server_version"] == 160004
    assert body["database_system_identifier"] == "7301234567890123456"
    assert body["tags"] == {"zone": "a"}
    assert "cluster_unlocked" not in body
    assert body["pgwarden"]["vip_held"] is True and body["pgwarden"]["watchdog_armed"] is True
    assert 27 < body["pgwarden"]["lease_deadline_in"] <= 29


def test_patroni_is_200_even_when_nothing_is_published() -> None:
    shm = SharedState.create(None)
    server = ApiServer(make_config("n1", free_port()), shm)
    server.start(poll_interval=0.05)
    try:
        node = Node(shm, server)
        code, body = node.json("/patroni")
        assert code == 200 and body["state"] == "unknown" and body["cluster_unlocked"] is True
        assert node.call("/health")[0] == 503
        assert node.call("/liveness")[0] == 503  # the supervisor never beat
        assert node.json("/cluster")[0] == 503
    finally:
        server.shutdown()
        shm.close()


def test_replica_lag_query(replica: Node) -> None:
    assert replica.call("/replica?lag=100")[0] == 200
    assert replica.call("/replica?lag=99")[0] == 503
    assert replica.call("/replica?lag=1kB&replication_state=streaming")[0] == 200
    assert replica.call("/replica?tag_zone=a")[0] == 200
    assert replica.call("/replica?tag_zone=b")[0] == 503
    assert replica.call("/readiness?lag=0")[0] == 503
    assert replica.call("/readiness?lag=0&mode=write")[0] == 200


@pytest.mark.parametrize("path", ["/replica?lag=lots", "/replica?lag=", "/read-only?lag=-5", "/readiness?mode=x"])
def test_bad_query_is_a_400_with_one_line(replica: Node, path: str) -> None:
    code, body = replica.json(path)
    assert code == 400
    assert isinstance(body["error"], str) and "\n" not in body["error"]


def test_unknown_path_is_404_and_wrong_method_405(primary: Node) -> None:
    code, body = primary.json("/nosuch")
    assert code == 404 and "nosuch" in body["error"]
    assert primary.call("/patroni/extra")[0] == 404
    code, headers, _ = primary.call("/patroni", "POST")
    assert code == 405 and headers["Allow"] == "GET"
    assert primary.call("/replica", "DELETE")[0] == 405
    assert primary.call("/nosuch", "POST")[0] == 404


def test_cluster_json_has_patronis_shape(node: Node) -> None:
    code, body = node.json("/cluster")
    assert code == 200
    assert body == {
        "members": [
            {"name": "n1", "role": "leader", "state": "running", "api_url": "http://10.0.0.1:8008/patroni",
             "host": "10.0.0.1", "port": 5432, "timeline": 5},
            {"name": "n2", "role": "replica", "state": "streaming", "api_url": "http://10.0.0.2:8008/patroni",
             "host": "10.0.0.2", "port": 5432, "timeline": 5, "lsn": "0/4000060", "lag": 0,
             "receive_lsn": "0/4000060", "receive_lag": 0, "replay_lsn": "0/4000060", "replay_lag": 0},
        ],
        "scope": "demo",
    }


def test_state_changes_are_seen_on_the_next_request(primary: Node) -> None:
    assert primary.call("/primary")[0] == 200
    lease = primary.shm.read("lease").data
    primary.shm.publish("lease", {**lease, "holds_leader": False})
    assert primary.call("/primary")[0] == 503


def test_a_failing_handler_is_a_500_and_the_server_lives_on(primary: Node) -> None:
    def boom(request: Any) -> Any:
        raise RuntimeError("kaboom\nsecond line")

    primary.server.app.routes[("GET", "/patroni")] = boom
    code, body = primary.json("/patroni")
    assert code == 500 and body == {"error": "internal error: RuntimeError: kaboom second line"}
    assert primary.call("/health")[0] == 200


def test_requests_are_counted(primary: Node) -> None:
    before = primary.server.app.requests
    primary.call("/health")
    primary.call("/nosuch")
    assert primary.server.app.requests == before + 2


# -- the socket: malformed, lying and oversized requests ---------------------------------


def echo(request: Any) -> Any:
    """A test route: the parsed body back (json_object's 411/400 otherwise)."""
    from pgwarden.workers.api_server import json_response

    return json_response(200, request.json_object())


def raw_exchange(node: Node, data: bytes, timeout: float = 5.0, half_close: bool = False) -> tuple[int, bytes]:
    """Send `data` as is; the status code and the body (0 if the server just closed).

    A request line http.server cannot parse is answered the HTTP/0.9 way, a body without a
    status line; our error format starts that body with the code.
    """
    with socket.create_connection(("127.0.0.1", node.server.port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)  # "that was all": the server reads EOF
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass  # the server may close with our unread bytes still queued
    if not reply.startswith(b"HTTP/"):
        first = reply.split(b" ", 1)[0]
        return (int(first) if first.isdigit() else 0), reply
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def still_serving(node: Node) -> bool:
    return node.call("/patroni")[0] == 200


@pytest.mark.parametrize("data,code", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"GET /patroni HTTP/9.9\r\n\r\n", 505),
    (b"GET /patroni HTTP/x\r\n\r\n", 400),
    (b"BREW /patroni HTTP/1.0\r\n\r\n", 501),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n", 414),
    (b"GET /patroni HTTP/1.0\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    (b"GET /patroni HTTP/1.0\r\n" + b"X-Many: 1\r\n" * 150 + b"\r\n", 431),
], ids=["garbage", "no-target", "http-9", "bad-version", "unknown-method", "long-line",
        "long-header", "many-headers"])
def test_malformed_requests_get_an_error_and_the_server_lives_on(primary: Node, data: bytes, code: int) -> None:
    status, body = raw_exchange(primary, data)
    assert status == code
    assert b"<html" not in body.lower() and body.count(b"\n") <= 1  # one plain line
    assert still_serving(primary)


def test_post_without_content_length_is_411(primary: Node) -> None:
    primary.server.app.routes[("POST", "/echo")] = echo
    status, body = raw_exchange(primary, b"POST /echo HTTP/1.0\r\n\r\n")
    assert status == 411 and b"Content-Length" in body
    assert raw_exchange(primary, b'POST /echo HTTP/1.0\r\nContent-Length: 8\r\n\r\n{"a": 1}') == (
        200, b'{"a":1}')
    assert still_serving(primary)


@pytest.mark.parametrize("headers,code", [
    (b"Content-Length: abc\r\n", 400),
    (b"Content-Length: -1\r\n", 400),
    (b"Content-Length: 5\r\nContent-Length: 6\r\n", 400),
    (b"Content-Length: 2000000\r\n", 413),
    (b"Content-Length: 99999999999999999999999999\r\n", 413),
    (b"Transfer-Encoding: chunked\r\n", 411),
], ids=["not-a-number", "negative", "conflicting", "over-1MiB", "absurd", "chunked"])
def test_bad_content_length_is_refused_without_reading(primary: Node, headers: bytes, code: int) -> None:
    primary.server.app.routes[("POST", "/echo")] = echo
    assert raw_exchange(primary, b"POST /echo HTTP/1.0\r\n" + headers + b"\r\n{}")[0] == code
    assert still_serving(primary)


def test_a_body_shorter_than_its_content_length(primary: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lying client gets a 408 within the handler's timeout, never a hung thread."""
    from pgwarden.workers.api_server import ApiRequestHandler

    monkeypatch.setattr(ApiRequestHandler, "timeout", 1)
    primary.server.app.routes[("POST", "/echo")] = echo
    with socket.create_connection(("127.0.0.1", primary.server.port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"POST /echo HTTP/1.0\r\nContent-Length: 100\r\n\r\n{\"a\":")  # and then silence
        reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.0 408"), reply
        assert time.monotonic() - started < 3
    # a client that stops sending early gets a 400 at once, and the server lives on
    status, body = raw_exchange(primary, b"POST /echo HTTP/1.0\r\nContent-Length: 100\r\n\r\n{}",
                                half_close=True)
    assert (status, body) == (400, b"the request body is shorter than its Content-Length")
    assert still_serving(primary)


def test_a_client_that_sends_nothing_does_not_block_others(primary: Node) -> None:
    with socket.create_connection(("127.0.0.1", primary.server.port), timeout=5):
        started = time.monotonic()
        assert still_serving(primary)
        assert time.monotonic() - started < 3


# -- the worker process ------------------------------------------------------------------


def _worker_ctx(shm: SharedState, port: int) -> WorkerContext:
    return WorkerContext("api", make_config("n1", port), shm, Wakeups(), logging.getLogger("test.api"))


def _run_worker(ctx: WorkerContext) -> None:
    from pgwarden.workers.api_worker import run

    run(ctx)


def test_worker_publishes_serves_and_stops_on_sigterm() -> None:
    shm = SharedState.create(None)
    publish_node(shm, "primary")
    port = free_port()
    proc = multiprocessing.get_context("fork").Process(target=_run_worker, args=(_worker_ctx(shm, port),))
    proc.start()
    try:
        deadline = time.monotonic() + 10
        while shm.read("api").data.get("listen") != f"127.0.0.1:{port}":
            assert time.monotonic() < deadline, "the api worker never published its address"
            time.sleep(0.05)
        assert shm.read("api").data.get("url") == f"http://127.0.0.1:{port}"
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).close()
        deadline = time.monotonic() + 5
        while shm.read("api").data.get("requests_served", 0) < 1:
            assert time.monotonic() < deadline, "the request counter was never published"
            time.sleep(0.05)
        assert shm.read("api").age() < 2.0
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        shm.close()


def test_worker_exits_non_zero_when_the_port_is_taken() -> None:
    shm = SharedState.create(None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        proc = multiprocessing.get_context("fork").Process(target=_run_worker, args=(_worker_ctx(shm, port),))
        proc.start()
        proc.join(10)
    try:
        assert proc.exitcode == 1
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        shm.close()
