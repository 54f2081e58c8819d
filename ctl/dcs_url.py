"""`--dcs-url etcd3://host:2379[,host2:2379]/namespace`, patronictl's DCS URL syntax.

Only etcd v3 is spoken; other schemes are named in the error so the user knows why.
"""
from __future__ import annotations

from dataclasses import dataclass

from pgwarden.ctl.errors import UsageError

DEFAULT_ETCD_PORT = 2379
_OTHER_SCHEMES = ("etcd", "consul", "zookeeper", "exhibitor", "kubernetes", "raft")


@dataclass(frozen=True)
class DcsUrl:
    hosts: tuple[str, ...]  # host:port
    namespace: str | None  # None: keep the config file's


def parse_dcs_url(url: str) -> DcsUrl:
    """Parse a DCS URL; a missing scheme means etcd3, a missing port 2379, a missing host localhost."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "etcd3", text
    scheme = scheme.lower()
    if scheme in _OTHER_SCHEMES:
        raise UsageError(f"--dcs-url {url!r}: only etcd v3 is supported, write etcd3://HOST:{DEFAULT_ETCD_PORT}")
    if scheme != "etcd3":
        raise UsageError(f"--dcs-url {url!r}: unknown scheme {scheme!r}, expected etcd3://HOST:PORT/NAMESPACE")
    netloc, slash, path = rest.partition("/")
    hosts = tuple(_endpoint(url, part) for part in (netloc.split(",") if netloc else [""]))
    namespace = "/" + path.strip("/") + "/" if slash and path.strip("/") else None
    return DcsUrl(hosts, namespace)


def _endpoint(url: str, part: str) -> str:
    part = part.strip()
    if part.startswith("["):  # [v6]:port
        addr, _, port = part[1:].partition("]")
        port = port.lstrip(":")
        host = f"[{addr}]"
    else:
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
    if port and not port.isdigit():
        raise UsageError(f"--dcs-url {url!r}: port {port!r} is not a number")
    return f"{host or 'localhost'}:{port or DEFAULT_ETCD_PORT}"
