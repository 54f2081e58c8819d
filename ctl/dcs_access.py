"""Reading and writing the cluster's keys, through pgwarden's own etcd v3 client.

Like patronictl in "ctl mode": no lease, no watch, one consistent read per call. Every
DCS failure becomes one sentence naming the endpoints (exit status 1).
"""
from __future__ import annotations

from typing import Any, Protocol

from pgwarden.core.errors import DCSError
from pgwarden.ctl.errors import CtlError, UsageError
from pgwarden.ctl.settings import Settings
from pgwarden.dcs.model import ClusterView, cluster_prefix

# Irrelevant to a client that never grants a lease; the DCS constructor wants one.
_UNUSED_TTL = 30


class ClusterStore(Protocol):
    """The part of `pgwarden.dcs.base.DCS` pgwardenctl uses (tests pass a fake)."""

    prefix: str

    def read_cluster(self) -> ClusterView: ...
    def set_config(self, value: dict[str, Any], version: int) -> bool: ...
    def set_failover(self, value: dict[str, Any], version: int) -> bool: ...
    def delete_failover(self, version: int) -> bool: ...
    def delete_cluster(self) -> None: ...
    def close(self) -> None: ...


def open_store(settings: Settings, scope: str) -> ClusterStore:
    if not settings.etcd_hosts:
        raise UsageError("no DCS to read: pass --dcs-url etcd3://HOST:2379, or -c CONFIG with an etcd3: section")
    # Imported here: grpc and the protobuf stubs take a while to load, and `--help`,
    # `version` and usage errors should not wait for them.
    from pgwarden.dcs.etcd3 import Etcd3DCS

    prefix = cluster_prefix(settings.namespace, scope)
    try:
        return Etcd3DCS(list(settings.etcd_hosts), prefix, _UNUSED_TTL, settings.dcs_timeout)
    except DCSError as e:
        raise CtlError(f"cannot use the DCS: {e}") from None


def dcs_call(what: str, fn: Any, *args: Any) -> Any:
    """Run one DCS operation; its failure as a CtlError saying what we were doing."""
    try:
        return fn(*args)
    except DCSError as e:
        raise CtlError(f"cannot {what}: {e}") from None
