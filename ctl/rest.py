"""A small client for members' REST APIs (stdlib http.client: no extra dependency).

Every call has a timeout. Basic auth and TLS follow patronictl: `ctl.authentication`
(else `restapi.authentication`), `ctl.cacert` (else `restapi.cafile`), `ctl.certfile`/
`keyfile` for client certificates, `ctl.insecure` or `-k` to skip server verification.
The URL is built from the scheme and host:port of the member's published `api_url`.
"""
from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from pgwarden.core.version import __version__
from pgwarden.ctl.errors import ApiUnreachable, UsageError
from pgwarden.ctl.settings import ApiSettings
from pgwarden.dcs.model import Member

DEFAULT_TIMEOUT = 10.0
STATUS_TIMEOUT = 3.0  # a status read (GET /patroni) for a listing: one silent member must not stall it
USER_AGENT = f"pgwardenctl/{__version__}"


@dataclass(frozen=True)
class ApiResponse:
    status: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    @property
    def message(self) -> str:
        """One line for people: Patroni answers plain text, pgwarden `{"error": ...}`."""
        body = self.json()
        if isinstance(body, dict):
            for key in ("error", "message", "detail"):
                if isinstance(body.get(key), str):
                    return " ".join(body[key].split())
        return " ".join(self.text.split())


def endpoint_url(member: Member, endpoint: str) -> str:
    """`http://host:port/<endpoint>` from the member's api_url (patronictl replaces the path)."""
    api_url = member.api_url
    if not api_url:
        raise ApiUnreachable(f"member {member.name} publishes no api_url: its REST API cannot be reached")
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiUnreachable(f"member {member.name} publishes an unusable api_url {api_url!r}")
    return f"{parts.scheme}://{parts.netloc}/{endpoint.lstrip('/')}"


def tls_context(api: ApiSettings) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=api.cacert)
        if api.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if api.certfile:
            ctx.load_cert_chain(api.certfile, api.keyfile, api.keyfile_password)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"cannot load the REST API TLS files (ctl.cacert/certfile/keyfile): {e}") from None
    return ctx


class RestClient:
    def __init__(self, api: ApiSettings, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api = api
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None

    def _headers(self, body: bytes | None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json, text/plain"}
        if self.api.auth is not None:
            token = base64.b64encode(":".join(self.api.auth).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    def _connection(self, url: str, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port
        if parts.scheme == "https":
            if self._tls is None:
                self._tls = tls_context(self.api)
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, member: Member, method: str, endpoint: str, body: Any = None,
                timeout: float | None = None) -> ApiResponse:
        """One call; raises ApiUnreachable when there is no HTTP answer at all."""
        url = endpoint_url(member, endpoint)
        limit = self.timeout if timeout is None else timeout
        data = None if body is None else json.dumps(body).encode()
        conn = self._connection(url, limit)
        try:
            conn.request(method.upper(), urlsplit(url).path, body=data, headers=self._headers(data))
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            return ApiResponse(response.status, text)
        except TimeoutError:
            raise ApiUnreachable(f"{member.name}: {method.upper()} {url}: no answer within {limit:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise ApiUnreachable(f"{member.name}: {method.upper()} {url} failed: {reason}") from None
        finally:
            conn.close()


class Requester(Protocol):
    def request(self, member: Member, method: str, endpoint: str, body: Any = None,
                timeout: float | None = None) -> ApiResponse: ...


def request_each(api: Requester, members: Sequence[Member], method: str, endpoint: str,
                 timeout: float = STATUS_TIMEOUT) -> dict[str, ApiResponse | ApiUnreachable]:
    """The same call to every member at once, one daemon thread each: name -> answer or ApiUnreachable.

    Takes about one `timeout`, not one per member. A member still silent after twice the
    timeout (a server that dribbles its answer) counts as unreachable; its thread is left
    behind (daemon: it never delays exit). Other errors (e.g. unreadable TLS files) raise.
    """
    results: dict[str, ApiResponse | ApiUnreachable] = {}
    errors: list[Exception] = []

    def call(member: Member) -> None:
        try:
            results[member.name] = api.request(member, method, endpoint, timeout=timeout)
        except ApiUnreachable as e:
            results[member.name] = e
        except Exception as e:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(e)

    threads = [threading.Thread(target=call, args=(m,), name=f"pgwardenctl-{m.name}", daemon=True)
               for m in members]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 2 * timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    late = f"{method.upper()} /{endpoint.lstrip('/')}: no answer within {2 * timeout:g} s"
    return {m.name: results[m.name] if m.name in results else ApiUnreachable(f"{m.name}: {late}")
            for m in members}
