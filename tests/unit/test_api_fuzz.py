"""Fuzz `ApiApp.handle` against its own OpenAPI document (workers/openapi.json).

Requests come from the document (every operation, its parameters and body schema) and from
noise (random methods, paths, query strings, headers, bodies, lying Content-Length). The
shared state behind the API is a primary, a replica, a stopped node, a node with torn
sections or nothing published, each with random fields overwritten by random JSON.

Every answer must be: never a 500; a code the document lists for that operation, or one
of the generic refusals (400, 401, 403, 404, 405, 411, 413); a JSON body that parses and,
where the document gives a schema, matches it; the content type the document promises.

The mutating endpoints talk to the DCS. The config points it at an unused loopback port:
one test sends every operation through that real, unreachable client. Everywhere else a
stand-in fails each DCS call at once with DCSError, because grpc's reconnect backoff can
make each call wait for its deadline, and hundreds of examples would take minutes. They
also ask the local supervisor through the shared state and wait for its answer; no
supervisor runs here, so that wait is cut to nothing (the answer is the same 503 a dead
supervisor would give, just sooner). The budget keeps the file under a minute.
"""
from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator

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
from pgwarden.core.errors import DCSError
from pgwarden.core.shm import SharedState
from pgwarden.dcs.model import ClusterView, Member, Versioned
from pgwarden.workers import api_actions
from pgwarden.workers.api_server import ApiApp, Response

DOC: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "workers" / "openapi.json").read_text(encoding="utf-8")
)
GENERIC = {400, 401, 403, 404, 405, 411, 413}
HTTP_METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
OPTIME = 0x4000060
USER, PASSWORD = "admin", "pässword"
FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def deref(node: Any) -> Any:
    """`node` with every local $ref inlined (the document has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = DOC
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/")]
            return deref(target)
        return {k: deref(v) for k, v in node.items()}
    if isinstance(node, list):
        return [deref(v) for v in node]
    return node


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    op: dict[str, Any]

    @property
    def parameters(self) -> list[dict[str, Any]]:
        item = DOC["paths"][self.path]
        return [deref(p) for p in item.get("parameters", []) + self.op.get("parameters", [])]

    @property
    def body_schema(self) -> dict[str, Any] | None:
        body = self.op.get("requestBody")
        return deref(body)["content"]["application/json"]["schema"] if body else None


OPERATIONS = [
    Operation(method.upper(), path, op)
    for path, item in DOC["paths"].items()
    for method, op in item.items()
    if method in ("get", "head", "options", "post", "put", "patch", "delete")
]
DOCUMENTED = {(o.method, o.path): o for o in OPERATIONS}


# -- the node behind the API -------------------------------------------------------------


def cluster_view(leader: str | None = "n1") -> dict[str, Any]:
    def m(name: str, role: str, ip: str, **data: Any) -> Member:
        return Member(name, {"conn_url": f"postgres://{ip}:5432/postgres",
                             "api_url": f"http://{ip}:8008/patroni", "state": "running",
                             "role": role, "timeline": 5, **data})

    return ClusterView(
        initialize="7301234567890123456",
        config=Versioned({"ttl": 30, "loop_wait": 10, "synchronous_mode": True}, 2),
        leader=leader,
        members={
            "n1": m("n1", "primary", "10.0.0.1", xlog_location=OPTIME),
            "n2": m("n2", "replica", "10.0.0.2", receive_lsn=OPTIME, replay_lsn=OPTIME - 8,
                    replication_state="streaming", tags={"zone": "b"}),
            "n3": m("n3", "replica", "10.0.0.3", tags={"nofailover": True}),
        },
        sync=Versioned({"leader": "n1", "sync_standby": "n2"}, 3),
        status=Versioned({"optime": OPTIME}, 4),
        history=Versioned([[1, 25165984, "no recovery target specified", "2026-01-02T10:00:00+00:00", "n1"]], 5),
    ).to_dict()


def node_sections(kind: str) -> dict[str, dict[str, Any]]:
    """What the writers publish on a primary, a replica or a stopped node (docs/shared-state.md)."""
    now = mono()
    primary = kind == "primary"
    role = "primary" if primary else "replica"
    running = kind != "stopped"
    xlog = ({"location": OPTIME} if primary else
            {"received_location": OPTIME, "replayed_location": OPTIME - 100,
             "replayed_timestamp": None, "paused": False})
    return {
        "supervisor": {
            "state": role, "decision": {"action": "none", "reason": "no action", "at": wall()},
            "dynamic": {"ttl": 30, "loop_wait": 10, "retry_timeout": 1, "maximum_lag_on_failover": 1048576},
            "workers": {}, "paused": kind == "stopped", "shutdown": False, "started_at": wall() - 60,
            "last_cycle": now, "config": {"tags": {"zone": "a", "clonefrom": True}},
        },
        "lease": {
            "connected": True, "lease_id": 7, "ttl": 30, "renewed_at": now - 1,
            "lease_deadline": now + 29, "holds_leader": primary, "cluster": cluster_view(),
            "cluster_at": now - 1, "dcs_last_seen": wall() - 1,
        },
        "postgres": {
            "state": "running" if running else "stopped", "running": running, "pid": 4242 if running else None,
            "postmaster_start_time": "2026-01-02 10:00:00.1+00:00", "role": role, "timeline": 5,
            "server_version": 160004, "sysid": "7301234567890123456", "xlog": xlog,
            "wal_position": OPTIME, "replication_state": None if primary else "streaming",
            "replication": [{"usename": "replicator", "application_name": "n2", "client_addr": "10.0.0.2",
                             "state": "streaming", "sync_state": "sync", "sync_priority": 1}] if primary else [],
            "sampled_at": now, "pending_restart": kind == "stopped",
            "pending_restart_reason": {"max_connections": {"old_value": "100", "new_value": "200"}},
        },
        "watchdog": {"mode": "automatic", "armed": primary, "timeout": 25, "last_feed": now,
                     "failed": kind == "stopped", "reason": None},
        "network": {"vip": "10.0.0.100", "interface": "eth0", "held": primary,
                    "last_change": now - 30, "reason": None},
    }


STATES = ["primary", "replica", "stopped", "torn", "empty"]
# A torn section costs each read ~0.1-0.2 s of spinning (core/shm.py READ_SPINS): draw it
# less often so the budget goes to requests.
DRAWN_STATES = ["primary", "replica", "stopped", "empty"] * 3 + ["torn"]
SECTIONS = ["supervisor", "lease", "postgres", "watchdog", "network"]
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Values the writers could plausibly publish (64-bit ints: shared state is orjson).
section_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)


@dataclass(frozen=True)
class NodeState:
    kind: str
    sections: dict[str, dict[str, Any]]
    garbled: bool  # some fields hold random values no writer would publish


@st.composite
def node_states(draw: st.DrawFn) -> NodeState:
    """A state, sometimes with a few fields of its sections overwritten by random values."""
    kind = draw(st.sampled_from(DRAWN_STATES))
    sections = node_sections("primary" if kind in ("torn", "empty") else kind)
    changes = draw(st.integers(0, 3))
    for _ in range(changes):
        section = draw(st.sampled_from(SECTIONS))
        keys = sorted(sections[section]) + ["xlog", "cluster", "dynamic", "config", "tags"]
        sections[section][draw(st.sampled_from(keys))] = draw(section_values)
    return NodeState(kind, sections, garbled=changes > 0)


def publish(shm: SharedState, kind: str, sections: dict[str, dict[str, Any]]) -> None:
    """Into the populated block; "empty" is served from a block no writer ever touched."""
    if kind == "empty":
        return
    for name in SECTIONS:
        shm.claim(name)  # heal a section torn by the previous example
        shm.publish(name, sections[name])
    if kind == "torn":
        shm._begin_write_and_die("lease")  # its writer died mid-write: no cluster view, no lease


# -- the apps under test -----------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(dcs_port: int, **restapi: Any) -> Config:
    return Config(
        scope="demo", namespace="service", name="n1",
        restapi=RestApiConfig(HostPort("127.0.0.1", 8008), HostPort("127.0.0.1", 8008), **restapi),
        etcd3_hosts=(HostPort("127.0.0.1", dcs_port),),
        bootstrap_dcs=DynamicConfig(retry_timeout=1),
        postgresql=PostgresConfig(
            data_dir="/var/lib/postgresql/data", bin_dir="/usr/lib/postgresql/16/bin",
            listen=HostPort("0.0.0.0", 5432), listen_addresses="0.0.0.0",
            connect_address=HostPort("10.0.0.1", 5432),
            superuser=Credentials("postgres"), replication=Credentials("replicator"),
        ),
        watchdog=WatchdogConfig(), tags={"zone": "a"}, vip=None,
    )


@dataclass
class Target:
    shm: SharedState  # the examples publish their state here
    empty: SharedState  # no status writer ever published here
    apps: dict[tuple[str, bool], ApiApp]  # (open|locked, on the empty block)

    def app(self, name: str, kind: str) -> ApiApp:
        return self.apps[(name, kind == "empty")]


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    shm, empty = SharedState.create(None), SharedState.create(None)
    port = unused_port()
    locked = dict(username=USER, password=PASSWORD, allowlist=("10.0.0.0/24", "fd00::/64"),
                  allowlist_include_members=True, verify_client="optional",
                  certfile="/unused/cert.pem", cafile="/unused/ca.pem")  # TLS files are the server's business
    configs = {"open": make_config(port), "locked": make_config(port, **locked)}
    apps = {(name, on_empty): ApiApp(config, empty if on_empty else shm)
            for name, config in configs.items() for on_empty in (False, True)}
    with pytest.MonkeyPatch.context() as mp:
        channel = getattr(api_actions, "RequestChannel", None)
        if channel is not None and hasattr(channel, "wait"):
            mp.setattr(channel, "wait", lambda self, rid, timeout: None)  # no supervisor here
        try:
            yield Target(shm, empty, apps)
        finally:
            for app in apps.values():
                dcs = getattr(getattr(app, "actions", None), "_dcs", None)
                if dcs is not None:
                    dcs.close()  # no grpc threads left behind for later tests that fork
            shm.close()
            empty.close()


# -- requests ----------------------------------------------------------------------------


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values shaped like `schema` (OpenAPI 3.0 subset), with wrong-typed values mixed in."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | json_scalars
    if "oneOf" in schema:
        return st.one_of([from_schema(s) for s in schema["oneOf"]])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        if not props:
            return st.dictionaries(st.text(max_size=12), json_values, max_size=5)
        required = schema.get("required", [])
        every = {k: from_schema(v) | json_values for k, v in props.items()}
        return st.fixed_dictionaries(
            {k: from_schema(props[k]) for k in required},
            optional={k: v for k, v in every.items() if k not in required},
        ) | st.fixed_dictionaries({}, optional=every)  # a required key may be missing too
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})) if schema.get("items") else json_values, max_size=4)
    if kind == "string":
        return st.sampled_from(["n1", "n2", "n3", "nosuch", "", "2026-01-01T10:00:00+00:00",
                                "2999-01-01T10:00", "yesterday", "16.4", "30s", "primary"]) | st.text(max_size=30)
    if kind == "integer":
        return st.integers(-(2**70), 2**70)
    if kind == "boolean":
        return st.booleans() | st.sampled_from(["true", "off", 1])
    return json_values


lag_values = st.sampled_from(["0", "100", "16kB", "64MB", "1GB", "1.5GB", "", "lots", "-5", "9" * 400,
                              "1e9", "1" * 30 + "TB", " 7 mb "]) | st.text(max_size=12)


def query_for(operation: Operation) -> st.SearchStrategy[dict[str, str]]:
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for param in operation.parameters:
        name = param["name"]
        if name == "lag":
            parts[name] = lag_values
        elif name == "tags":
            continue  # form-exploded: tag_<name>=<value> pairs, added below
        else:
            parts[name] = from_schema(param["schema"]).map(str)
    tags = st.dictionaries(st.sampled_from(["tag_zone", "tag_clonefrom", "tag_nosuch", "tag_"]),
                           st.sampled_from(["a", "b", "true", "false", ""]), max_size=2)
    return st.fixed_dictionaries({}, optional=parts).flatmap(lambda q: tags.map(lambda t: {**q, **t}))


@dataclass(frozen=True)
class Call:
    app: str
    method: str
    target: str
    body: bytes | None
    headers: dict[str, str]
    client_ip: str
    client_cert: bool


credentials = st.sampled_from([
    {},
    {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()},
    {"authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()},
    {"Authorization": "Basic ###"},
    {"Authorization": "Digest x"},
])
clients = st.sampled_from(["10.0.0.7", "10.0.0.2", "10.9.9.9", "::ffff:10.0.0.7", "fd00::5", "", "nonsense"])


@st.composite
def documented_calls(draw: st.DrawFn) -> Call:
    operation = draw(st.sampled_from(OPERATIONS))
    query = draw(query_for(operation))
    target = operation.path + (("?" + urlencode(query)) if query else "")
    schema = operation.body_schema
    if schema is None:
        body = draw(st.none() | st.just(b""))
    else:
        body = draw(st.one_of(
            from_schema(schema).map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)
                                    if _dumpable(v) else json.dumps(v).encode()),
            st.none(), st.just(b""), st.binary(max_size=64),
        ))
    headers = dict(draw(credentials))
    if body is not None and draw(st.booleans()):
        headers["Content-Length"] = str(len(body))
    return Call(draw(st.sampled_from(["open", "locked"])), operation.method, target, body, headers,
                draw(clients), draw(st.booleans()))


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        return True
    except (orjson.JSONEncodeError, TypeError):
        return False


known_paths = sorted({o.path for o in OPERATIONS})
random_paths = st.one_of(
    st.sampled_from(known_paths),
    st.sampled_from(known_paths).map(lambda p: p + "/"),
    st.sampled_from(known_paths).flatmap(lambda p: st.text(max_size=10).map(lambda t: p + "/" + quote(t))),
    st.text(max_size=40).map(lambda t: "/" + t),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=40),  # what http.server hands over
    st.sampled_from(["", "*", "//[oops", "http://x/patroni", "/%00", "/..%2f..", "/?", "/#frag"]),
)
random_bodies = st.one_of(
    st.none(), st.just(b""), st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"{" * 5000, b'{"a": ' + b"9" * 5000 + b"}", b'{"leader": "n1"}' + b" " * 10,
                     b'{"leader": "n1", "candidate": "n2"}', b'{"pause": true}', b"\xff\xfe{}"]),
)
random_headers = st.dictionaries(
    st.sampled_from(["Content-Length", "content-length", "Authorization", "Content-Type", "X-Whatever",
                     "Transfer-Encoding"]) | st.text(max_size=10),
    st.text(max_size=30) | st.integers(-10, 10**12).map(str),
    max_size=4,
)


@st.composite
def random_calls(draw: st.DrawFn) -> Call:
    method = draw(st.sampled_from(HTTP_METHODS) | st.text(max_size=8))
    path = draw(random_paths)
    if draw(st.booleans()):
        path += "?" + draw(st.text(max_size=40) | st.sampled_from(["lag=", "lag=1&lag=2", "tag_=x", "=&&=", "%zz"]))
    headers = {**draw(random_headers), **draw(credentials)}
    return Call(draw(st.sampled_from(["open", "locked"])), method, path, draw(random_bodies), headers,
                draw(clients), draw(st.booleans()))


# -- the checks --------------------------------------------------------------------------


def documented_operation(call: Call) -> Operation | None:
    try:
        path = urlsplit(call.target).path.rstrip("/") or "/"  # as ApiApp.handle reads it
    except ValueError:
        return None
    return DOCUMENTED.get((call.method, path))


def check(call: Call, response: Response, garbled: bool = False) -> None:
    """`garbled`: the sections held values of the wrong type, which the body passes through
    (the writers' types are their contract): everything but the body schema is checked."""
    where = f"{call.method} {call.target!r} on the {call.app} app"
    assert response.code != 500, f"{where}: 500 {response.body[:300]!r}"
    operation = documented_operation(call)
    documented = deref(operation.op["responses"]) if operation else {}
    assert response.code in GENERIC or str(response.code) in documented, (
        f"{where}: {response.code} is not documented ({sorted(documented)}): {response.body[:200]!r}"
    )
    content_type = dict(response.headers).get("Content-Type", "")
    if content_type.startswith("application/json"):
        body = orjson.loads(response.body)  # must parse
    documented_response = documented.get(str(response.code))
    if documented_response is None or not response.body:
        return
    media = documented_response.get("content", {})
    mime = content_type.split(";")[0].strip()
    assert mime in media, f"{where}: {response.code} answered {content_type!r}, documented {sorted(media)}"
    schema = media[mime].get("schema")
    if mime == "application/json" and schema and not garbled:
        OAS30Validator(schema).validate(body)


class NoDCS:
    """A DCS client whose every call fails at once, as an unreachable etcd's does in the end."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise DCSError(f"etcd 127.0.0.1: {name} failed (UNAVAILABLE): fuzz stand-in")

        return fail


@contextmanager
def unreachable_dcs_at_once() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        actions = getattr(api_actions, "Actions", None)
        if actions is not None and hasattr(actions, "dcs"):
            mp.setattr(actions, "dcs", lambda self: NoDCS())
        yield


def run(target: Target, call: Call, state: NodeState) -> None:
    publish(target.shm, state.kind, state.sections)
    with unreachable_dcs_at_once():
        response = target.app(call.app, state.kind).handle(
            call.method, call.target, call.body, call.headers, call.client_ip, call.client_cert
        )
    check(call, response, state.garbled)


@FUZZ
@given(call=documented_calls(), state=node_states())
def test_documented_operations_answer_documented_codes(target: Target, call: Call, state: NodeState) -> None:
    run(target, call, state)


@FUZZ
@given(call=random_calls(), state=node_states())
def test_random_requests_never_break_the_api(target: Target, call: Call, state: NodeState) -> None:
    run(target, call, state)


@pytest.mark.parametrize("kind", STATES)
def test_every_documented_operation_in_every_state(target: Target, kind: str) -> None:
    """The plain, valid request for each operation: a deterministic floor under the fuzzing."""
    publish(target.shm, kind, node_sections("primary" if kind in ("torn", "empty") else kind))
    auth = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    for operation in OPERATIONS:
        body = b'{"leader": "n1", "candidate": "n2"}' if operation.body_schema else None
        variants = [("open", "", False), ("locked", "10.0.0.7", True), ("locked", "10.9.9.9", True)]
        for app, ip, cert in variants[:1] if kind == "torn" else variants:
            call = Call(app, operation.method, operation.path, body, dict(auth), ip, cert)
            with unreachable_dcs_at_once():
                response = target.app(app, kind).handle(call.method, call.target, body, auth, ip, cert)
            check(call, response)


def test_the_locked_app_refuses_outsiders_before_anything_else(target: Target) -> None:
    publish(target.shm, "primary", node_sections("primary"))
    app = target.app("locked", "primary")
    for operation in OPERATIONS:
        if operation.method in ("GET", "HEAD", "OPTIONS"):
            continue
        response = app.handle(operation.method, operation.path, b"{}", {}, "10.9.9.9", True)
        assert (response.code, response.body) == (403, b"Access is denied"), operation
        response = app.handle(operation.method, operation.path, b"{}", {}, "10.0.0.7", False)
        assert (response.code, response.body) == (403, b"client certificate required"), operation
        response = app.handle(operation.method, operation.path, b"{}", {}, "10.0.0.7", True)
        assert response.code == 401, operation


def test_every_operation_through_the_real_unreachable_dcs_client(target: Target) -> None:
    """The real etcd client, pointed at a closed port: errors must map to documented codes."""
    app = target.app("open", "empty")  # no cached view: every call goes out
    for operation in OPERATIONS:
        body = b'{"leader": "n1", "candidate": "n2"}' if operation.body_schema else None
        call = Call("open", operation.method, operation.path, body, {}, "", False)
        check(call, app.handle(call.method, call.target, body))
    response = app.handle("PATCH", "/config", b'{"pause": true}')
    assert response.code == 503 and b"DCS" in response.body, response

