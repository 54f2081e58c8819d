"""The REST API over TLS: restapi.certfile/keyfile/cafile/verify_client on a real server.

A throwaway CA, a server certificate and client certificates are made with the `openssl`
CLI in a temporary directory (removed afterwards). No etcd or PostgreSQL needed.
"""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from pgwarden.core.config_model import (
    Config,
    Credentials,
    DynamicConfig,
    HostPort,
    PostgresConfig,
    RestApiConfig,
    WatchdogConfig,
)
from pgwarden.core.errors import ConfigError
from pgwarden.core.shm import SharedState
from pgwarden.workers.api_access import server_ssl_context
from pgwarden.workers.api_server import ApiServer, Request, Response, json_response
from pgwarden.workers.member_data import member_data

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    server_crt: Path
    server_key: Path
    server_key_encrypted: Path  # password: "key-secret"
    client_crt: Path
    client_key: Path
    stranger_crt: Path  # a client certificate from another CA
    stranger_key: Path


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d: Path, name: str) -> None:
    openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_leaf(d: Path, ca: str, name: str, extensions: str) -> None:
    openssl(d, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    (d / f"{name}.ext").write_text(extensions)
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with tempfile.TemporaryDirectory(prefix="pgwarden-tls-") as tmp:
        d = Path(tmp)
        make_ca(d, "ca")
        make_ca(d, "other-ca")
        make_leaf(d, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        make_leaf(d, "ca", "client", "extendedKeyUsage=clientAuth\n")
        make_leaf(d, "other-ca", "stranger", "extendedKeyUsage=clientAuth\n")
        openssl(d, "pkey", "-in", "server.key", "-aes256", "-passout", "pass:key-secret",
                "-out", "server-encrypted.key")
        yield Pki(d, d / "ca.crt", d / "server.crt", d / "server.key", d / "server-encrypted.key",
                  d / "client.crt", d / "client.key", d / "stranger.crt", d / "stranger.key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(port: int, **restapi: Any) -> Config:
    return Config(
        scope="demo", namespace="service", name="n1",
        restapi=RestApiConfig(HostPort("127.0.0.1", port), HostPort("127.0.0.1", port), **restapi),
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


def echo(request: Request) -> Response:
    return json_response(200, request.json_object())


class TlsNode:
    def __init__(self, server: ApiServer, pki: Pki) -> None:
        self.server, self.pki = server, pki
        self.base = f"https://127.0.0.1:{server.port}"

    def context(self, cert: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        if cert == "client":
            ctx.load_cert_chain(str(self.pki.client_crt), str(self.pki.client_key))
        elif cert == "stranger":
            ctx.load_cert_chain(str(self.pki.stranger_crt), str(self.pki.stranger_key))
        return ctx

    def call(self, path: str, method: str = "GET", body: bytes | None = None,
             cert: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.context(cert)) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read()


@contextmanager
def serving(pki: Pki, **restapi: Any) -> Iterator[TlsNode]:
    shm = SharedState.create(None)
    tls = {"certfile": str(pki.server_crt), "keyfile": str(pki.server_key), "cafile": str(pki.ca)}
    server = ApiServer(make_config(free_port(), **{**tls, **restapi}), shm)
    server.app.routes[("POST", "/echo")] = echo
    server.start(poll_interval=0.05)
    try:
        yield TlsNode(server, pki)
    finally:
        server.shutdown()
        shm.close()


@pytest.fixture
def optional(pki: Pki) -> Iterator[TlsNode]:
    with serving(pki, verify_client="optional") as node:
        yield node


@pytest.fixture
def required(pki: Pki) -> Iterator[TlsNode]:
    with serving(pki, verify_client="required") as node:
        yield node


# -- https -------------------------------------------------------------------------------


def test_https_is_served_and_advertised(optional: TlsNode) -> None:
    assert optional.server.url == f"https://127.0.0.1:{optional.server.port}"
    code, body = optional.call("/patroni")
    assert code == 200 and orjson.loads(body)["patroni"]["name"] == "n1"
    data = member_data(optional.server.app.config, {}, paused=False)
    assert data["api_url"] == f"https://127.0.0.1:{optional.server.port}/patroni"


def test_plain_http_member_data_stays_http() -> None:
    assert member_data(make_config(8008), {}, paused=False)["api_url"] == "http://127.0.0.1:8008/patroni"


def test_the_server_context_demands_tls_1_2_and_the_verify_mode(pki: Pki) -> None:
    base = {"certfile": str(pki.server_crt), "keyfile": str(pki.server_key), "cafile": str(pki.ca)}
    for mode, expected in (("none", ssl.CERT_NONE), ("optional", ssl.CERT_OPTIONAL),
                           ("required", ssl.CERT_REQUIRED)):
        ctx = server_ssl_context(make_config(8008, verify_client=mode, **base).restapi)
        assert ctx is not None
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.verify_mode == expected
    assert server_ssl_context(make_config(8008).restapi) is None


# -- verify_client -----------------------------------------------------------------------


def test_optional_reads_without_a_certificate(optional: TlsNode) -> None:
    assert optional.call("/patroni")[0] == 200


def test_optional_unsafe_call_without_a_certificate_is_403(optional: TlsNode) -> None:
    assert optional.call("/echo", "POST", b'{"a": 1}') == (403, b"client certificate required")


def test_optional_unsafe_call_with_a_certificate_passes(optional: TlsNode) -> None:
    code, body = optional.call("/echo", "POST", b'{"a": 1}', cert="client")
    assert (code, orjson.loads(body)) == (200, {"a": 1})


def test_optional_refuses_a_certificate_from_another_ca(optional: TlsNode) -> None:
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        optional.call("/echo", "POST", b'{"a": 1}', cert="stranger")
    assert optional.call("/patroni")[0] == 200  # and the server keeps serving


def test_required_get_without_a_certificate_fails(required: TlsNode) -> None:
    """The handshake fails (TLS 1.3 reports it on the first read); a 403 would do as well."""
    try:
        code, _ = required.call("/patroni")
    except (urllib.error.URLError, ssl.SSLError, ConnectionError):
        return
    assert code == 403


def test_required_with_a_certificate_passes(required: TlsNode) -> None:
    assert required.call("/patroni", cert="client")[0] == 200
    assert required.call("/echo", "POST", b'{"b": 2}', cert="client")[0] == 200


# -- robustness ----------------------------------------------------------------------------


def test_a_silent_client_does_not_block_the_others(optional: TlsNode) -> None:
    """Handshakes run in the connection's thread, not in the accept loop."""
    with socket.create_connection(("127.0.0.1", optional.server.port), timeout=5):
        start_at = time.monotonic()
        assert optional.call("/patroni")[0] == 200
        assert time.monotonic() - start_at < 3


def test_plain_http_to_the_tls_port_fails_cleanly(optional: TlsNode) -> None:
    with socket.create_connection(("127.0.0.1", optional.server.port), timeout=5) as raw:
        raw.sendall(b"GET /patroni HTTP/1.0\r\n\r\n")
        try:
            reply = raw.recv(1024)
        except ConnectionResetError:
            reply = b""
        assert not reply.startswith(b"HTTP/1.0 200")
    assert optional.call("/patroni")[0] == 200


# -- key files -----------------------------------------------------------------------------


def test_encrypted_key_with_its_password(pki: Pki) -> None:
    with serving(pki, keyfile=str(pki.server_key_encrypted), keyfile_password="key-secret") as node:
        assert node.call("/patroni")[0] == 200


@pytest.mark.parametrize("change,key", [
    ({"keyfile_password": "wrong"}, "restapi.keyfile"),
    ({"certfile": "/nonexistent/server.crt"}, "restapi.certfile"),
    ({"cafile": "/nonexistent/ca.crt"}, "restapi.cafile"),
    ({"ciphers": "NO-SUCH-CIPHER"}, "restapi.ciphers"),
], ids=["wrong-password", "missing-certfile", "missing-cafile", "bad-ciphers"])
def test_bad_tls_files_are_one_line_errors_naming_the_key(pki: Pki, change: dict[str, str], key: str) -> None:
    restapi = {"certfile": str(pki.server_crt), "keyfile": str(pki.server_key_encrypted),
               "keyfile_password": "key-secret", "cafile": str(pki.ca), **change}
    shm = SharedState.create(None)
    try:
        with pytest.raises(ConfigError) as e:
            ApiServer(make_config(free_port(), **restapi), shm)
        assert e.value.key == key and "\n" not in str(e.value)
    finally:
        shm.close()


def test_cafile_that_is_not_a_certificate(pki: Pki) -> None:
    shm = SharedState.create(None)
    try:
        config = make_config(free_port(), certfile=str(pki.server_crt), keyfile=str(pki.server_key),
                             cafile=str(pki.server_key))
        with pytest.raises(ConfigError) as e:
            ApiServer(config, shm)
        assert e.value.key == "restapi.cafile"
    finally:
        shm.close()
