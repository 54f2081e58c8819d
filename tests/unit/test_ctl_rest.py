"""The REST client against a real local HTTP(S) server: auth, bodies, timeouts, failures."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pgwarden.ctl.errors import ApiUnreachable
from pgwarden.ctl.rest import ApiResponse, RestClient, endpoint_url, request_each
from pgwarden.ctl.settings import ApiSettings
from pgwarden.dcs.model import Member

SEEN: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        SEEN.append({"method": self.command, "path": self.path, "body": body,
                     "auth": self.headers.get("Authorization"), "type": self.headers.get("Content-Type")})
        if self.path == "/slow":
            threading.Event().wait(2)
        code, text = (412, json.dumps({"error": "candidate  does\nnot exist"})) if self.path == "/switchover" \
            else (200, "reload scheduled")
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    SEEN.clear()
    yield srv
    srv.shutdown()
    srv.server_close()


def _member(url: str) -> Member:
    return Member("n1", {"api_url": url})


def test_the_url_keeps_scheme_and_host_of_api_url_and_replaces_the_path() -> None:
    assert endpoint_url(_member("https://10.0.0.1:8008/patroni"), "switchover") == "https://10.0.0.1:8008/switchover"
    with pytest.raises(ApiUnreachable, match="publishes no api_url"):
        endpoint_url(Member("n2", {}), "patroni")


def test_a_post_sends_json_with_basic_auth(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    client = RestClient(ApiSettings(auth=("admin", "s3cret")))
    r = client.request(_member(f"http://127.0.0.1:{port}/patroni"), "post", "reload", {"force": True})
    assert (r.status, r.text, r.ok) == (200, "reload scheduled", True)
    assert SEEN[0] == {"method": "POST", "path": "/reload", "body": '{"force": true}',
                       "auth": "Basic YWRtaW46czNjcmV0", "type": "application/json"}


def test_an_error_body_becomes_one_line(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    r = RestClient(ApiSettings()).request(_member(f"http://127.0.0.1:{port}/patroni"), "POST", "switchover", {})
    assert r.status == 412 and not r.ok and r.message == "candidate does not exist"
    assert SEEN[0]["auth"] is None
    assert ApiResponse(503, "Switchover\n failed").message == "Switchover failed"


def test_no_answer_within_the_timeout_is_unreachable(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    with pytest.raises(ApiUnreachable, match="no answer within 0.3 s"):
        RestClient(ApiSettings(), timeout=0.3).request(_member(f"http://127.0.0.1:{port}/x"), "GET", "slow")


def test_a_refused_connection_is_unreachable_with_the_reason() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ApiUnreachable, match=f"n1: GET http://127.0.0.1:{port}/patroni failed: .*refused"):
            RestClient(ApiSettings()).request(_member(f"http://127.0.0.1:{port}/patroni"), "GET", "patroni")


def test_request_each_asks_every_member_at_once_and_keeps_the_silent_ones_as_unreachable(
        server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
        members = [Member(n, {"api_url": f"http://127.0.0.1:{port}/patroni"}) for n in ("n1", "n2", "n3")]
        members.append(Member("n4", {"api_url": f"http://127.0.0.1:{closed}/patroni"}))
        start = time.monotonic()
        answers = request_each(RestClient(ApiSettings()), members, "GET", "slow", timeout=5.0)
        took = time.monotonic() - start
    assert list(answers) == ["n1", "n2", "n3", "n4"]
    assert all(isinstance(answers[n], ApiResponse) and answers[n].status == 200 for n in ("n1", "n2", "n3"))
    assert isinstance(answers["n4"], ApiUnreachable) and "refused" in answers["n4"].message
    assert took < 4.0  # three 2-second answers side by side, not one after the other
    late = request_each(RestClient(ApiSettings()), members[:1], "GET", "slow", timeout=0.3)["n1"]
    assert isinstance(late, ApiUnreachable) and "no answer within 0.3 s" in late.message


@pytest.fixture
def tls_server(server: ThreadingHTTPServer, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], cert
    srv.shutdown()
    srv.server_close()


def test_https_verifies_against_cacert_and_insecure_skips_verification(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    member = _member(f"https://127.0.0.1:{port}/patroni")
    assert RestClient(ApiSettings(cacert=str(cert))).request(member, "GET", "patroni").status == 200
    assert RestClient(ApiSettings(insecure=True)).request(member, "GET", "patroni").status == 200
    with pytest.raises(ApiUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        RestClient(ApiSettings()).request(member, "GET", "patroni")
