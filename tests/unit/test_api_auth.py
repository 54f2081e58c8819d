"""Access checks and request bodies, through `ApiApp.handle` (PATRONI-COMPAT.md 2.1).

Patroni's rules, in its order: allowlist (403 `Access is denied`), client certificate
(403 `client certificate required`), basic auth (401 with `WWW-Authenticate`), for every
unsafe method on every path; bodies: 411 without Content-Length, 400 for bad JSON.
"""
from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from pgwarden.core.clock import mono
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
from pgwarden.dcs.model import ClusterView, Member, Versioned
from pgwarden.workers.api_access import AccessPolicy, Network
from pgwarden.workers.api_server import ApiApp, ApiError, Request, Response, json_response

UNSAFE = ["POST", "PUT", "PATCH", "DELETE", "BREW"]  # an unknown method is unsafe too
TEXT = "text/plain; charset=utf-8"


def make_config(**restapi: Any) -> Config:
    return Config(
        scope="demo", namespace="service", name="n1",
        restapi=RestApiConfig(HostPort("127.0.0.1", 8008), HostPort("127.0.0.1", 8008), **restapi),
        etcd3_hosts=(HostPort("127.0.0.1", 2379),),
        bootstrap_dcs=DynamicConfig(),
        postgresql=PostgresConfig(
            data_dir="/var/lib/postgresql/data", bin_dir="/usr/lib/postgresql/16/bin",
            listen=HostPort("0.0.0.0", 5432), listen_addresses="0.0.0.0",
            connect_address=HostPort("10.0.0.1", 5432),
            superuser=Credentials("postgres"), replication=Credentials("replicator"),
        ),
        watchdog=WatchdogConfig(), tags={}, vip=None,
    )


@pytest.fixture
def shm() -> Iterator[SharedState]:
    state = SharedState.create(None)
    try:
        yield state
    finally:
        state.close()


def echo(request: Request) -> Response:
    """A test route that answers with the parsed body (or json_object's ApiError)."""
    optional = request.query.get("optional") == ["1"]
    return json_response(200, request.json_object(optional=optional))


def app_with(shm: SharedState, **restapi: Any) -> ApiApp:
    app = ApiApp(make_config(**restapi), shm)
    app.routes[("POST", "/echo")] = echo
    return app


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def header(response: Response, name: str) -> str | None:
    return next((v for k, v in response.headers if k.lower() == name.lower()), None)


def assert_text(response: Response, code: int, text: str) -> None:
    assert (response.code, response.body.decode()) == (code, text)
    assert header(response, "Content-Type") == TEXT


# -- basic auth ----------------------------------------------------------------------------

AUTH = {"username": "admin", "password": "s3cr:et"}  # a colon in the password is legal


@pytest.mark.parametrize("method", UNSAFE)
def test_unsafe_method_without_credentials_is_401_with_a_challenge(shm: SharedState, method: str) -> None:
    r = app_with(shm, **AUTH).handle(method, "/echo", b"{}")
    assert_text(r, 401, "no auth header received")
    assert header(r, "WWW-Authenticate") == 'Basic realm="Patroni"'


@pytest.mark.parametrize("headers", [
    basic("admin", "wrong"),
    basic("other", "s3cr:et"),
    basic("admin", "s3cr:e"),
    {"Authorization": "Bearer abc"},
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Basic"},
], ids=["wrong-password", "wrong-user", "prefix-of-password", "bearer", "bad-base64", "empty"])
def test_wrong_credentials_are_401(shm: SharedState, headers: dict[str, str]) -> None:
    r = app_with(shm, **AUTH).handle("POST", "/echo", b'{"a": 1}', headers)
    assert_text(r, 401, "not authenticated")
    assert header(r, "WWW-Authenticate") == 'Basic realm="Patroni"'


def test_right_credentials_reach_the_handler(shm: SharedState) -> None:
    app = app_with(shm, **AUTH)
    r = app.handle("POST", "/echo", b'{"a": 1}', basic("admin", "s3cr:et"))
    assert (r.code, orjson.loads(r.body)) == (200, {"a": 1})
    # the header name is matched in any case, and the scheme too (RFC 7617)
    token = basic("admin", "s3cr:et")["Authorization"].split()[1]
    assert app.handle("POST", "/echo", b'{"a": 1}', {"authorization": f"basic {token}"}).code == 200


def test_auth_is_checked_before_routing(shm: SharedState) -> None:
    """An unauthenticated client learns nothing about which unsafe routes exist."""
    app = app_with(shm, **AUTH)
    assert app.handle("POST", "/nosuch").code == 401
    assert app.handle("POST", "/patroni").code == 401
    assert app.handle("POST", "/nosuch", None, basic("admin", "s3cr:et")).code == 404
    assert app.handle("POST", "/patroni", None, basic("admin", "s3cr:et")).code == 405


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_need_no_credentials(shm: SharedState, method: str) -> None:
    app = app_with(shm, **AUTH)
    assert app.handle(method, "/health").code == 503  # nothing published: not running
    if method == "GET":
        assert app.handle(method, "/patroni").code == 200


def test_no_authentication_configured_lets_unsafe_calls_through(shm: SharedState) -> None:
    assert app_with(shm).handle("POST", "/echo", b'{"x": true}').code == 200


# -- allowlist -----------------------------------------------------------------------------


@pytest.mark.parametrize("client,allowed", [
    ("10.0.0.5", True),
    ("10.0.1.5", False),
    ("192.168.7.7", True),  # a single address
    ("::ffff:10.0.0.5", True),  # IPv4-mapped, as a dual-stack socket reports it
    ("fd00::1", True),
    ("fd01::1", False),
    ("", False),
    ("not-an-ip", False),
])
def test_allowlist(shm: SharedState, client: str, allowed: bool) -> None:
    app = app_with(shm, allowlist=("10.0.0.0/24", "192.168.7.7", "fd00::/64"))
    r = app.handle("POST", "/echo", b'{"a": 1}', {}, client)
    if allowed:
        assert r.code == 200
    else:
        assert_text(r, 403, "Access is denied")
    assert app.handle("GET", "/patroni", None, {}, client).code == 200  # reads are open


def test_allowlist_host_names_are_resolved_when_the_config_loads() -> None:
    resolved: list[str] = []

    def resolve(host: str) -> list[Network]:
        resolved.append(host)
        return [ipaddress.ip_network("10.9.9.9")] if host == "db1.example" else []

    policy = AccessPolicy.from_config(make_config(allowlist=("db1.example", "gone.example")).restapi, resolve)
    assert resolved == ["db1.example", "gone.example"]
    assert policy.check("POST", {}, "10.9.9.9", False, list) is None
    denial = policy.check("POST", {}, "10.9.9.8", False, list)
    assert denial is not None and (denial.code, denial.text) == (403, "Access is denied")


def test_allowlist_that_resolves_to_nothing_denies_everyone() -> None:
    """Patroni fails open here (an empty resolved list means no check); we fail closed."""
    policy = AccessPolicy.from_config(make_config(allowlist=("gone.example",)).restapi, lambda h: [])
    denial = policy.check("POST", {}, "127.0.0.1", False, list)
    assert denial is not None and denial.code == 403


def publish_view(shm: SharedState, at: float, *ips: str) -> None:
    members = {
        f"n{i}": Member(f"n{i}", {"api_url": f"http://{ip}:8008/patroni", "role": "replica"})
        for i, ip in enumerate(ips, 1)
    }
    members["broken"] = Member("broken", {"api_url": "http://[not-closed:8008/patroni"})
    members["none"] = Member("none", {"role": "replica"})
    view = ClusterView(config=Versioned({}, 1), leader="n1", members=members)
    shm.publish("lease", {"cluster": view.to_dict(), "cluster_at": at})


def test_allowlist_include_members_admits_the_members_api_hosts(shm: SharedState) -> None:
    publish_view(shm, mono(), "10.0.0.1", "10.0.0.2")
    app = app_with(shm, allowlist_include_members=True, allowlist=("192.168.0.0/16",))
    assert app.handle("POST", "/echo", b'{"a": 1}', {}, "10.0.0.2").code == 200
    assert app.handle("POST", "/echo", b'{"a": 1}', {}, "192.168.1.1").code == 200
    assert_text(app.handle("POST", "/echo", b'{"a": 1}', {}, "10.0.0.3"), 403, "Access is denied")


def test_allowlist_include_members_without_a_fresh_view_admits_no_member(shm: SharedState) -> None:
    publish_view(shm, mono() - 31, "10.0.0.1", "10.0.0.2")  # older than ttl (30)
    app = app_with(shm, allowlist_include_members=True)
    assert_text(app.handle("POST", "/echo", b'{"a": 1}', {}, "10.0.0.2"), 403, "Access is denied")


def test_failsafe_pings_skip_the_member_check_as_in_patroni(shm: SharedState) -> None:
    """While the DCS is down the member list expires, exactly when failsafe pings matter."""
    app = app_with(shm, allowlist_include_members=True)  # and no view: no member is known
    app.routes[("POST", "/failsafe")] = echo
    assert app.handle("POST", "/failsafe", b'{"name": "n2"}', {}, "10.0.0.2").code == 200
    assert app.handle("POST", "/echo", b'{"name": "n2"}', {}, "10.0.0.2").code == 403
    # the static allowlist still applies to it
    app = app_with(shm, allowlist_include_members=True, allowlist=("192.168.0.0/16",))
    app.routes[("POST", "/failsafe")] = echo
    assert_text(app.handle("POST", "/failsafe", b'{"name": "n2"}', {}, "10.0.0.2"), 403, "Access is denied")
    assert app.handle("POST", "/failsafe", b'{"name": "n2"}', {}, "192.168.0.2").code == 200


# -- client certificates -------------------------------------------------------------------

TLS = {"certfile": "/c.pem", "cafile": "/ca.pem"}


def test_verify_client_optional_needs_a_certificate_for_unsafe_methods(shm: SharedState) -> None:
    app = app_with(shm, verify_client="optional", **TLS)
    assert_text(app.handle("POST", "/echo", b'{"a": 1}'), 403, "client certificate required")
    assert app.handle("POST", "/echo", b'{"a": 1}', client_cert=True).code == 200
    assert app.handle("GET", "/patroni").code == 200


def test_verify_client_required_needs_a_certificate_for_every_method(shm: SharedState) -> None:
    app = app_with(shm, verify_client="required", **TLS)
    assert_text(app.handle("GET", "/patroni"), 403, "client certificate required")
    assert app.handle("GET", "/patroni", client_cert=True).code == 200


def test_checks_run_in_patronis_order(shm: SharedState) -> None:
    app = app_with(shm, allowlist=("10.0.0.0/24",), verify_client="optional", **TLS, **AUTH)
    assert_text(app.handle("POST", "/echo", None, {}, "10.0.1.1"), 403, "Access is denied")
    assert_text(app.handle("POST", "/echo", None, {}, "10.0.0.1"), 403, "client certificate required")
    assert app.handle("POST", "/echo", None, {}, "10.0.0.1", True).code == 401
    ok = app.handle("POST", "/echo", b'{"a": 1}', basic("admin", "s3cr:et"), "10.0.0.1", True)
    assert ok.code == 200


def test_a_reloaded_config_brings_new_access_rules(shm: SharedState) -> None:
    app = app_with(shm)
    assert app.handle("POST", "/echo", b'{"a": 1}').code == 200
    app.config = make_config(**AUTH)
    assert app.handle("POST", "/echo", b'{"a": 1}').code == 401


# -- bodies --------------------------------------------------------------------------------


def test_missing_content_length_is_411_when_a_body_is_required(shm: SharedState) -> None:
    r = app_with(shm).handle("POST", "/echo", None)
    assert r.code == 411 and header(r, "Content-Type") == TEXT
    assert b"Content-Length" in r.body


def test_optional_body_may_be_absent_or_empty(shm: SharedState) -> None:
    app = app_with(shm)
    for body in (None, b"", b"  \n"):
        r = app.handle("POST", "/echo?optional=1", body)
        assert (r.code, orjson.loads(r.body)) == (200, {}), body
    assert orjson.loads(app.handle("POST", "/echo?optional=1", b"{}").body) == {}


@pytest.mark.parametrize("body,why", [
    (b"", "empty"),
    (b"{}", "an empty object where one is required"),
    (b"{", "truncated"),
    (b"[1, 2]", "a list"),
    (b'"text"', "a string"),
    (b"null", "null"),
    (b'{"a": NaN}', "NaN is not JSON"),
    (b'{"a": Infinity}', "Infinity is not JSON"),
    (b'{"a": "\xff"}', "not UTF-8"),
    (b'{"a": "\\ud800"}', "a lone surrogate could not be written back out"),
    (b'{"a": 123456789012345678901234567890}', "an integer beyond 64 bits could not be stored"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
])
def test_bad_body_is_a_one_line_400(shm: SharedState, body: bytes, why: str) -> None:
    r = app_with(shm).handle("POST", "/echo", body)
    assert r.code == 400, why
    assert header(r, "Content-Type") == TEXT and b"\n" not in r.body


def test_body_keeps_exact_values(shm: SharedState) -> None:
    body = '{"leader": "n1", "candidate": "ñ2", "n": 18446744073709551615, "f": 1.5, "nested": {"x": [null]}}'
    r = app_with(shm).handle("POST", "/echo", body.encode())
    assert (r.code, orjson.loads(r.body)) == (200, orjson.loads(body))


def test_json_object_raises_api_error() -> None:
    with pytest.raises(ApiError) as e:
        Request("POST", "/x", {}).json_object()
    assert e.value.code == 411
    with pytest.raises(ApiError) as e:
        Request("POST", "/x", {}, b"[]").json_object(optional=True)
    assert e.value.code == 400
    assert Request("POST", "/x", {}, b'{"force": true}').json_object() == {"force": True}


# -- errors from handlers ------------------------------------------------------------------


def test_api_error_from_a_handler_is_plain_text_on_one_line(shm: SharedState) -> None:
    def refuse(request: Request) -> Response:
        raise ApiError(503, "I am the leader,\ncan not reinitialize", ("Retry-After", "5"))

    app = app_with(shm)
    app.routes[("POST", "/reinit-test")] = refuse
    r = app.handle("POST", "/reinit-test")
    assert_text(r, 503, "I am the leader, can not reinitialize")
    assert header(r, "Retry-After") == "5"


def test_unknown_path_and_method(shm: SharedState) -> None:
    app = app_with(shm)
    r = app.handle("GET", "/nosuch")
    assert r.code == 404 and orjson.loads(r.body) == {"error": "no such endpoint: /nosuch"}
    r = app.handle("PUT", "/patroni")
    assert r.code == 405 and header(r, "Allow") == "GET"


@pytest.mark.parametrize("target", ["//[oops/x", "/patroni\ud800"])
def test_malformed_target_is_400_not_500(shm: SharedState, target: str) -> None:
    assert app_with(shm).handle("GET", target).code == 400


def test_a_failsafe_promise_outlives_a_restart_of_the_api_worker(shm: SharedState) -> None:
    """The supervisor keeps out of the race for ttl after an accepted POST /failsafe; a
    restarted api worker must not forget the promise by publishing a fresh section."""
    shm.publish("supervisor", {"dynamic": {"failsafe_mode": True}})
    app = app_with(shm)
    assert_text(app.handle("POST", "/failsafe", b'{"name": "n1"}', {}, "127.0.0.1"), 200,
                "Accepted")
    promised = shm.read("api").data["failsafe_ping"]
    assert promised["name"] == "n1"
    shm.claim("api")  # the restarted worker takes the section over, then builds its app
    app_with(shm).actions.channel.publish({"state": "fresh"})
    assert shm.read("api").data["failsafe_ping"] == promised
