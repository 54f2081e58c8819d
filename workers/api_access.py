"""Who may use the REST API: TLS, the allowlist, client certificates and basic auth.

The rules are Patroni's `check_access` (PATRONI-COMPAT.md 2.1), in its order, with its
status codes and texts, because scripts and patronictl print or match them:

1. unsafe methods only: a client IP outside `restapi.allowlist` (and, with
   `allowlist_include_members`, outside the hosts of the members' api_url) -> 403
   `Access is denied`;
2. `verify_client: optional` and an unsafe method, or `required` and any method, without a
   verified client certificate -> 403 `client certificate required`;
3. unsafe methods only: basic auth configured and missing or wrong -> 401 with
   `WWW-Authenticate: Basic realm="Patroni"`.

One deliberate difference: an allowlist whose entries all fail to resolve denies every
unsafe call, where Patroni's empty resolved list silently allows everyone.

Every method other than GET, HEAD and OPTIONS counts as unsafe, so a route added later,
or a method nobody thought of, is checked without anyone having to remember it.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pgwarden.core.config_model import RestApiConfig
from pgwarden.core.errors import ConfigError

log = logging.getLogger("pgwarden.api")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# patronictl and curl users know Patroni's realm; nothing gains from a different one.
AUTH_CHALLENGE = ("WWW-Authenticate", 'Basic realm="Patroni"')

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[Network]]


@dataclass(frozen=True)
class Denial:
    """Why a request may not run: the status and the one-line text/plain body."""

    code: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()


def resolve_host(host: str) -> list[Network]:
    """Every address `host` resolves to, as /32 or /128 networks; [] (logged) if it does not."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        log.warning("REST API allowlist: cannot resolve %r: %s", host, e)
        return []
    return [ipaddress.ip_network(str(info[4][0]).split("%")[0]) for info in infos]


def as_networks(entry: str, resolve: Resolver) -> list[Network]:
    """An IP, a network (host bits allowed, as Patroni does) or a host name to resolve."""
    try:
        return [ipaddress.ip_network(entry.split("%")[0], strict=False)]
    except ValueError:
        return resolve(entry)


def client_address(text: str) -> IpAddress | None:
    """The peer's address; an IPv4-mapped IPv6 address (dual-stack sockets) as IPv4."""
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def member_api_hosts(api_urls: Iterable[str | None]) -> Iterator[str]:
    """The host part of each member's api_url (patronictl and peers dial these)."""
    for url in api_urls:
        try:
            host = urlsplit(url).hostname if url else None
        except ValueError:
            host = None  # a malformed api_url names no host; it must not break the check
        if host:
            yield host


@dataclass(frozen=True)
class AccessPolicy:
    """restapi.* access settings with the static allowlist already resolved."""

    allowlist: tuple[Network, ...] = ()
    restrict_ips: bool = False  # an allowlist was configured, even if nothing in it resolved
    include_members: bool = False
    verify_client: str = "none"
    credentials: bytes | None = None  # b"username:password" for basic auth

    @classmethod
    def from_config(cls, restapi: RestApiConfig, resolve: Resolver = resolve_host) -> AccessPolicy:
        """Resolve allowlist host names now, once per config load (as Patroni does)."""
        networks = [net for entry in restapi.allowlist for net in as_networks(entry, resolve)]
        auth = None
        if restapi.username is not None and restapi.password is not None:
            auth = f"{restapi.username}:{restapi.password}".encode()
        return cls(
            allowlist=tuple(networks),
            restrict_ips=bool(restapi.allowlist),
            include_members=restapi.allowlist_include_members,
            verify_client=restapi.verify_client,
            credentials=auth,
        )

    def check(
        self,
        method: str,
        headers: Mapping[str, str],
        client_ip: str,
        client_cert: bool,
        member_hosts: Callable[[], Iterable[str]],
        resolve: Resolver = resolve_host,
        check_members: bool = True,
    ) -> Denial | None:
        """None when the request may run. `headers` has lower-case names.

        `member_hosts` is called only when the static allowlist did not already admit the
        client, and its host names are resolved per call: members come and go.
        `check_members=False` leaves the members out, as Patroni does for POST /failsafe:
        its pings matter while the DCS is down, exactly when the member list is unknown.
        """
        unsafe = method not in SAFE_METHODS
        include_members = self.include_members and check_members
        if unsafe and (self.restrict_ips or include_members):
            if not self._ip_allowed(client_ip, member_hosts if include_members else (lambda: ()), resolve):
                return Denial(403, "Access is denied")
        needs_cert = self.verify_client == "required" or (unsafe and self.verify_client == "optional")
        if needs_cert and not client_cert:
            return Denial(403, "client certificate required")
        if unsafe and self.credentials is not None:
            reason = auth_problem(headers.get("authorization"), self.credentials)
            if reason is not None:
                return Denial(401, reason, (AUTH_CHALLENGE,))
        return None

    def _ip_allowed(
        self, client_ip: str, member_hosts: Callable[[], Iterable[str]], resolve: Resolver
    ) -> bool:
        address = client_address(client_ip)
        if address is None:
            return False
        if any(address in net for net in self.allowlist):
            return True
        return any(
            address in net for host in member_hosts() for net in as_networks(host, resolve)
        )


def auth_problem(header: str | None, credentials: bytes) -> str | None:
    """Patroni's 401 texts: `no auth header received` and `not authenticated`."""
    if header is None:
        return "no auth header received"
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return "not authenticated"
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "not authenticated"
    # compare_digest: the time taken must not tell how much of the password was right
    return None if hmac.compare_digest(given, credentials) else "not authenticated"


# -- TLS ---------------------------------------------------------------------------------

_CERT_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def server_ssl_context(restapi: RestApiConfig) -> ssl.SSLContext | None:
    """The TLS context for `restapi.certfile`, or None for plain http.

    Files are read here, when the API worker starts, not when the config is validated, so a
    config can be checked on another machine. Each failure is a ConfigError naming the key.
    """
    if not restapi.certfile:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _readable("restapi.certfile", restapi.certfile)
    if restapi.keyfile:
        _readable("restapi.keyfile", restapi.keyfile)
    try:
        ctx.load_cert_chain(restapi.certfile, restapi.keyfile, restapi.keyfile_password)
    except (ssl.SSLError, ValueError) as e:
        # OpenSSL cannot tell a wrong password from a broken key file: name every candidate.
        key = "restapi.keyfile" if restapi.keyfile else "restapi.certfile"
        raise ConfigError(key, f"cannot load the certificate and key ({_ssl_reason(e)}): check "
                          "certfile, keyfile and keyfile_password belong together") from None
    if restapi.cafile:
        _readable("restapi.cafile", restapi.cafile)
        try:
            ctx.load_verify_locations(cafile=restapi.cafile)
        except ssl.SSLError as e:
            raise ConfigError("restapi.cafile", f"is not a PEM CA certificate file ({_ssl_reason(e)})") from None
    if restapi.ciphers:
        try:
            ctx.set_ciphers(restapi.ciphers)
        except ssl.SSLError:
            raise ConfigError("restapi.ciphers", f"OpenSSL accepts none of {restapi.ciphers!r}: "
                              "see `openssl ciphers -v` for valid names") from None
    ctx.verify_mode = _CERT_MODES[restapi.verify_client]
    return ctx


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(key, f"cannot read {path!r}: {e.strerror or e}") from None


def _ssl_reason(e: Exception) -> str:
    reason = getattr(e, "reason", None)
    return str(reason) if reason else " ".join(str(e).split())
