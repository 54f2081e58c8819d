"""The REST API's HTTP side: an explicit route table on stdlib `http.server`.

Routing is a dict lookup on (method, path), never Patroni's first-segment reflection or
substring tests, so an unknown path is a 404 and a wrong method on a known path a 405.
Each request reads the shared state once and answers from it: nothing here talks to the
DCS or PostgreSQL, so a health check can neither block nor take the agent down.

`GET /cluster` answers from the lease worker's cached cluster view (at most ttl old), not
from a fresh DCS read as Patroni does: the API process has no DCS client, and a read that
can hang while etcd is down is exactly what a monitoring endpoint must not do.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from pgwarden.core.clock import mono
from pgwarden.core.config_model import Config
from pgwarden.core.shm import SharedState
from pgwarden.workers.api_health import (
    HEALTH_CHECKS,
    STATUS_ONLY_PATHS,
    QueryError,
    health_code,
)
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


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]


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


def error_response(code: int, message: str, *headers: tuple[str, str]) -> Response:
    r = json_response(code, {"error": " ".join(message.split())})  # always one line
    return Response(r.code, r.body, r.headers + headers)


class ApiApp:
    """The routes and their handlers; knows the shared state and the config, nothing else."""

    def __init__(self, config: Config, shm: SharedState, clock: Callable[[], float] = mono) -> None:
        self.config = config
        self.shm = shm
        self.clock = clock
        self.routes: dict[tuple[str, str], Handler] = self._build_routes()
        self._count_lock = threading.Lock()
        self._requests = 0

    def _build_routes(self) -> dict[tuple[str, str], Handler]:
        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/patroni"): self.get_patroni,
            ("GET", "/cluster"): self.get_cluster,
        }
        for path in HEALTH_CHECKS:
            routes[("GET", path)] = self.get_health
            # HAProxy's `option httpchk` sends OPTIONS and reads the status line only.
            routes[("HEAD", path)] = self.status_only
            routes[("OPTIONS", path)] = self.status_only
        return routes

    @property
    def requests(self) -> int:
        return self._requests

    def handle(self, method: str, target: str) -> Response:
        """Route one request; never raises (a failing handler becomes a one-line 500)."""
        with self._count_lock:
            self._requests += 1
        try:
            parts = urlsplit(target)
            path = parts.path.rstrip("/") or "/"
            # keep_blank_values: `?lag=` must reach the parser and fail loudly, not vanish.
            request = Request(method, path, parse_qs(parts.query, keep_blank_values=True))
            handler = self.routes.get((method, path))
            if handler is None:
                return self._no_route(method, path)
            return handler(request)
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

    # -- handlers --------------------------------------------------------------------------

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
    # A client that connects and never finishes its request must not pin a thread forever.
    timeout = 10

    def _serve(self) -> None:
        self._write(self.server.app.handle(self.command, self.path))

    do_GET = do_HEAD = do_OPTIONS = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.code)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body and self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError) as e:
            log.debug("REST API client went away: %s", e)  # a health checker's timeout, not ours

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("REST API %s - %s", self.client_address[0], format % args)


class ApiHttpServer(ThreadingHTTPServer):
    allow_reuse_address = True  # SO_REUSEADDR: a restarted worker must rebind at once
    daemon_threads = True
    request_queue_size = 64  # several load balancers probe every node every few seconds

    def __init__(self, address: tuple[str, int], app: ApiApp, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.app = app
        super().__init__(address, ApiRequestHandler)

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
        self.app = ApiApp(config, shm, clock)
        listen = config.restapi.listen
        self.httpd = ApiHttpServer((listen.host, listen.port), self.app, address_family(listen.host))
        self._thread: threading.Thread | None = None

    @property
    def listen(self) -> str:
        """The bound address, with the real port when the config asked for port 0."""
        host, port = self.httpd.socket.getsockname()[:2]
        return format_listen(str(host), int(port))

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
