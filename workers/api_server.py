"""The REST API's HTTP side: an explicit route table on stdlib `http.server`.

Routing is a dict lookup on (method, path), never Patroni's first-segment reflection or
substring tests, so an unknown path is a 404 and a wrong method on a known path a 405.
Each read-only request reads the shared state once and answers from it: nothing here
talks to the DCS or PostgreSQL, so a health check can neither block nor take the agent
down. The operations (api_actions.py, merged into the route table) have a DCS client of
their own.

Every unsafe request (any method but GET, HEAD and OPTIONS) passes the access checks of
api_access.py in `ApiApp.handle`, before routing, so no endpoint can forget them. Request
bodies are read by Content-Length, at most MAX_BODY_BYTES (1 MiB; larger is a 413), within
the connection's timeout; chunked bodies are refused (411) rather than silently ignored.

`GET /cluster` answers from the lease worker's cached cluster view (at most ttl old), not
from a fresh DCS read as Patroni does: a read that can hang while etcd is down is exactly
what a monitoring endpoint must not do.
"""
from __future__ import annotations

import functools
import importlib.resources
import ipaddress
import json
import logging
import re
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from pgwarden.core.clock import mono
from pgwarden.core.config_model import Config
from pgwarden.core.shm import SharedState
from pgwarden.workers.api_access import AccessPolicy, member_api_hosts, server_ssl_context
from pgwarden.workers.api_health import (
    HEALTH_CHECKS,
    STATUS_ONLY_PATHS,
    QueryError,
    health_code,
)
from pgwarden.workers.api_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pgwarden.workers.api_metrics import render_metrics
from pgwarden.workers.api_status import (
    STATUS_SECTIONS,
    Snapshot,
    cluster_body,
    dcs_view,
    dynamic_setting,
    node_status,
    patroni_body,
)

log = logging.getLogger("pgwarden.api")

# Routes where allowlist_include_members does not apply (Patroni's
# `check_access(allowlist_check_members=False)`): failsafe pings arrive while the DCS is
# down, when the cached member list has expired; only restapi.allowlist applies there.
MEMBERS_NOT_CHECKED = frozenset({("POST", "/failsafe")})

# Every body this API takes is a small JSON object; 1 MiB is far above any real one and
# keeps a hostile client from making a worker buffer gigabytes.
MAX_BODY_BYTES = 1 << 20
_DIGITS = re.compile(r"[0-9]{1,19}")


class ApiError(Exception):
    """A request the handler refuses: answered as `code` with `text` as a text/plain body.

    Patroni's unsafe endpoints answer plain text (`Access is denied`, `Switchover
    scheduled`) that patronictl prints and scripts match, so `text` is sent as given,
    folded onto one line.
    """

    def __init__(self, code: int, text: str, *headers: tuple[str, str]) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.headers = headers


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes | None = None  # None: the client sent no Content-Length, so no body
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case
    client_ip: str = ""
    client_cert: bool = False  # a client certificate was presented and verified (TLS)

    def json_object(self, optional: bool = False) -> dict[str, Any]:
        """The body as a JSON object, with Patroni's codes; raises ApiError.

        No Content-Length: 411 when the body is required, {} when optional. An empty body is
        {} when optional. Anything else must be a JSON object (non-empty when required),
        else 400. Big integers stay exact (stdlib json, as Patroni); NaN and Infinity, and
        text or numbers that could not be written back out as JSON, are refused with 400.
        """
        if self.body is None:
            if optional:
                return {}
            raise ApiError(411, "this request needs a JSON body: send it with a Content-Length header")
        if optional and not self.body.strip():
            return {}
        try:
            value = json.loads(self.body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise ApiError(400, f"the request body must be a JSON object, got {type(value).__name__}")
        if not value and not optional:
            raise ApiError(400, "the request body must be a non-empty JSON object")
        try:
            orjson.dumps(value)  # whatever a handler stores or echoes must serialise later
        except (orjson.JSONEncodeError, TypeError) as e:
            raise ApiError(400, f"the request body holds a value that cannot be stored: {e}") from None
        return value


@dataclass(frozen=True)
class Response:
    """A body-less response is sent with Content-Length: 0 and no Content-Type."""

    code: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


Handler = Callable[[Request], Response]


def json_response(code: int, payload: Any) -> Response:
    body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    return Response(code, body, (("Content-Type", "application/json"),))


def text_response(code: int, text: str, *headers: tuple[str, str]) -> Response:
    """A one-line text/plain body, the way Patroni answers its unsafe endpoints."""
    body = " ".join(text.split()).encode("utf-8", "backslashreplace")
    return Response(code, body, (("Content-Type", "text/plain; charset=utf-8"),) + headers)


def error_response(code: int, message: str, *headers: tuple[str, str]) -> Response:
    r = json_response(code, {"error": " ".join(message.split())})  # always one line
    return Response(r.code, r.body, r.headers + headers)


@functools.cache
def openapi_document() -> bytes:
    """workers/openapi.json, shipped as package data (read once)."""
    return importlib.resources.files("pgwarden.workers").joinpath("openapi.json").read_bytes()


class ApiApp:
    """The routes and their handlers; knows the shared state and the config, nothing else."""

    def __init__(self, config: Config, shm: SharedState, clock: Callable[[], float] = mono) -> None:
        self.config = config  # also resolves the allowlist (see the setter)
        self.shm = shm
        self.clock = clock
        self.routes: dict[tuple[str, str], Handler] = self._build_routes()
        self._count_lock = threading.Lock()
        self._requests = 0

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        """A reload (api_worker) brings new restapi.allowlist/authentication into force."""
        self.access = AccessPolicy.from_config(config.restapi)
        self._config = config

    def _build_routes(self) -> dict[tuple[str, str], Handler]:
        # Imported here: api_actions imports this module for Request, ApiError & co.
        from pgwarden.workers.api_actions import action_routes

        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/patroni"): self.get_patroni,
            ("GET", "/cluster"): self.get_cluster,
            ("GET", "/openapi.json"): self.get_openapi,
            ("GET", "/metrics"): self.get_metrics,
        }
        for path in HEALTH_CHECKS:
            routes[("GET", path)] = self.get_health
            # HAProxy's `option httpchk` sends OPTIONS and reads the status line only.
            routes[("HEAD", path)] = self.status_only
            routes[("OPTIONS", path)] = self.status_only
        routes.update(action_routes(self))
        return routes

    @property
    def requests(self) -> int:
        return self._requests

    def handle(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        client_ip: str = "",
        client_cert: bool = False,
    ) -> Response:
        """Check access, route one request; never raises (a failing handler becomes a 500).

        `body` is None when the request had no Content-Length; `headers` may use any case.
        """
        with self._count_lock:
            self._requests += 1
        try:
            try:
                parts = urlsplit(target)
                target.encode("utf-8")  # lone surrogates could not be echoed back in an error
            except (ValueError, UnicodeError):
                return error_response(400, "the request target is not a valid URL path")
            path = parts.path.rstrip("/") or "/"
            request = Request(
                method, path,
                # keep_blank_values: `?lag=` must reach the parser and fail loudly, not vanish.
                parse_qs(parts.query, keep_blank_values=True),
                body,
                {name.lower(): value for name, value in (headers or {}).items()},
                client_ip,
                client_cert,
            )
            denial = self.access.check(
                method, request.headers, client_ip, client_cert, self.member_hosts,
                check_members=(method, path) not in MEMBERS_NOT_CHECKED,
            )
            if denial is not None:
                log.info("REST API %s %s from %s refused: %d %s",
                         method, path, client_ip, denial.code, denial.text)
                return text_response(denial.code, denial.text, *denial.headers)
            handler = self.routes.get((method, path))
            if handler is None:
                return self._no_route(method, path)
            return handler(request)
        except ApiError as e:
            return text_response(e.code, e.text, *e.headers)
        except QueryError as e:
            return error_response(400, str(e))
        except Exception as e:  # the server must outlive any handler bug
            log.error("REST API %s %s failed: %s: %s", method, target, type(e).__name__, e)
            log.debug("REST API handler traceback", exc_info=True)
            return error_response(500, f"internal error: {type(e).__name__}: {e}")

    def _no_route(self, method: str, path: str) -> Response:
        allowed = sorted(m for (m, p) in self.routes if p == path)
        if allowed:
            return error_response(
                405, f"{method} is not supported on {path}", ("Allow", ", ".join(allowed))
            )
        return error_response(404, f"no such endpoint: {path}")

    def read(self, *sections: str) -> tuple[Snapshot, float]:
        """One read of each needed section, and the time they were read at."""
        views = {name: self.shm.read(name) for name in sections}
        return Snapshot.from_views(views), self.clock()

    def member_hosts(self) -> list[str]:
        """The hosts of the members' api_url in the cached cluster view (none when stale)."""
        snap, now = self.read("supervisor", "lease")
        view = dcs_view(snap, now, dynamic_setting(snap, self.config, "ttl"))
        if view is None:
            return []
        return list(member_api_hosts(m.api_url for m in view.members.values()))

    # -- handlers --------------------------------------------------------------------------

    def get_metrics(self, request: Request) -> Response:
        snap, now = self.read(*STATUS_SECTIONS)
        return Response(200, render_metrics(snap, now, self.config),
                        (("Content-Type", METRICS_CONTENT_TYPE),))

    def get_patroni(self, request: Request) -> Response:
        snap, now = self.read(*STATUS_SECTIONS)
        return json_response(200, patroni_body(snap, node_status(snap, now, self.config), now))

    def get_health(self, request: Request) -> Response:
        snap, now = self.read(*STATUS_SECTIONS)
        status = node_status(snap, now, self.config)
        code = health_code(request.path, status, request.query)
        if request.path in STATUS_ONLY_PATHS:
            return Response(code)
        return json_response(code, patroni_body(snap, status, now))

    def status_only(self, request: Request) -> Response:
        snap, now = self.read(*STATUS_SECTIONS)
        return Response(health_code(request.path, node_status(snap, now, self.config), request.query))

    def get_openapi(self, request: Request) -> Response:
        return Response(200, openapi_document(), (("Content-Type", "application/json"),))

    def get_cluster(self, request: Request) -> Response:
        snap, now = self.read("supervisor", "lease")
        view = dcs_view(snap, now, dynamic_setting(snap, self.config, "ttl"))
        if view is None:
            return error_response(
                503,
                "no cluster view younger than ttl: the lease worker has not read the DCS "
                "recently (see its log and the `lease` section)",
            )
        return json_response(200, cluster_body(view, self.config.scope))


class ApiRequestHandler(BaseHTTPRequestHandler):
    server: ApiHttpServer
    # A client that connects and never finishes its request (TLS handshake, headers or
    # body) must not pin a thread forever: this bounds each of those steps.
    timeout = 10
    # http.server's own errors (a malformed request line, 431 for oversized headers, 501)
    # as one text line instead of an HTML page.
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s: %(explain)s"

    def handle(self) -> None:
        # The handshake runs here, in the connection's own thread and under `timeout`, not
        # in the accept loop, where one silent client would stall every other one.
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except OSError as e:
                log.debug("REST API TLS handshake with %s failed: %s", self.client_address[0], e)
                self.close_connection = True
                return
        super().handle()

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ApiError as e:
            self.close_connection = True  # the rest of the body, if any, is not ours to parse
            self._write(text_response(e.code, e.text, *e.headers))
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), value)  # the first of repeated headers counts
        cert = isinstance(self.connection, ssl.SSLSocket) and bool(self.connection.getpeercert())
        self._write(self.server.app.handle(
            self.command, self.path, body, headers, str(self.client_address[0]), cert,
        ))

    do_GET = do_HEAD = do_OPTIONS = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _read_body(self) -> bytes | None:
        """The body by Content-Length (None without one), within `timeout` overall."""
        if self.headers.get("Transfer-Encoding") is not None:
            # Patroni would ignore such a body; running POST /restart without its schedule
            # is worse than refusing it.
            raise ApiError(411, "chunked request bodies are not supported: send a Content-Length")
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not values:
            return None
        if len(values) > 1:
            raise ApiError(400, "conflicting Content-Length headers: send one")
        text = values.pop()
        if _DIGITS.fullmatch(text) is None:
            if re.fullmatch(r"[0-9]+", text):
                raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
            raise ApiError(400, f"Content-Length must be a number of bytes, got {text!r}")
        length = int(text)
        if length > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        deadline = mono() + self.timeout
        chunks: list[bytes] = []
        while length > 0:
            left = deadline - mono()
            try:
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(length)  # one recv at most: the deadline is checked between
            except TimeoutError:
                raise ApiError(408, f"the request body did not arrive within {self.timeout} s: "
                               "send as many bytes as Content-Length says") from None
            if not chunk:
                raise ApiError(400, "the request body is shorter than its Content-Length")
            chunks.append(chunk)
            length -= len(chunk)
        self.connection.settimeout(self.timeout)  # the full timeout again for the response
        return b"".join(chunks)

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.code)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body and self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError as e:  # reset, broken pipe, or a TLS error on the way out
            log.debug("REST API client went away: %s", e)  # a health checker's timeout, not ours

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("REST API %s - %s", self.client_address[0], format % args)


class ApiHttpServer(ThreadingHTTPServer):
    allow_reuse_address = True  # SO_REUSEADDR: a restarted worker must rebind at once
    daemon_threads = True
    request_queue_size = 64  # several load balancers probe every node every few seconds

    def __init__(
        self,
        address: tuple[str, int],
        app: ApiApp,
        family: socket.AddressFamily,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address_family = family
        self.app = app
        super().__init__(address, ApiRequestHandler)
        if tls is not None:
            # No handshake in accept(): ApiRequestHandler.handle does it in its own thread.
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can stall
        # start-up for the resolver timeout; nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def address_family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 literal or a name that resolves to IPv6 first, else IPv4."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host.split("%")[0]).version == 6 else socket.AF_INET
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return socket.AddressFamily(infos[0][0])


def format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ApiServer:
    """The bound server and its serving thread. Binding happens in the constructor (OSError)."""

    def __init__(self, config: Config, shm: SharedState, clock: Callable[[], float] = mono) -> None:
        """Raises OSError when the address cannot be bound, ConfigError for TLS files."""
        tls = server_ssl_context(config.restapi)
        self.scheme = "https" if tls is not None else "http"
        self.app = ApiApp(config, shm, clock)
        listen = config.restapi.listen
        self.httpd = ApiHttpServer((listen.host, listen.port), self.app, address_family(listen.host), tls)
        self._thread: threading.Thread | None = None

    @property
    def listen(self) -> str:
        """The bound address, with the real port when the config asked for port 0."""
        host, port = self.httpd.socket.getsockname()[:2]
        return format_listen(str(host), int(port))

    @property
    def url(self) -> str:
        """Where to reach the bound server: `https://host:port` under TLS."""
        return f"{self.scheme}://{self.listen}"

    @property
    def port(self) -> int:
        return int(self.httpd.socket.getsockname()[1])

    def start(self, poll_interval: float = 0.5) -> None:
        """Serve in a daemon thread; `poll_interval` bounds how long shutdown() waits."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": poll_interval},
            name="api-http", daemon=True,
        )
        self._thread.start()

    def shutdown(self) -> None:
        """Stop accepting, wait for the serving loop, close the socket. Safe to call twice."""
        if self._thread is not None:
            self.httpd.shutdown()  # only valid while serve_forever runs
            self._thread.join()
            self._thread = None
        self.httpd.server_close()
