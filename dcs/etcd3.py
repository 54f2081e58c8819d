"""The etcd v3 backend: python-etcd3's generated gRPC stubs behind our own small adapter.

We use python-etcd3 for its stubs and messages only. Its client methods take one fixed
timeout per client (we need a deadline per call, retries included), drop the lease in
`replace()`, let raw grpc errors escape, and its watch thread spins at 100% CPU while etcd
is down. Every call here has a deadline and raises DCSError; the watch is our own loop.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# python-etcd3's generated code fails to import under protobuf >= 4's C implementation;
# this must run before protobuf is first imported anywhere in the process (grpc included).
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import grpc  # type: ignore[import-untyped]

with warnings.catch_warnings():
    # python-etcd3's generated code uses descriptor calls protobuf 6 deprecates (~100 warnings).
    warnings.simplefilter("ignore", DeprecationWarning)
    from etcd3 import etcdrpc  # type: ignore[import-untyped]

from pgwarden.core.errors import DCSError
from pgwarden.dcs.base import DCS
from pgwarden.dcs.model import (
    KEY_CONFIG,
    KEY_FAILOVER,
    KEY_FAILSAFE,
    KEY_HISTORY,
    KEY_INITIALIZE,
    KEY_LEADER,
    KEY_MEMBERS,
    KEY_STATUS,
    KEY_SYNC,
    ClusterView,
    dumps,
)

log = logging.getLogger(__name__)

# A member that lost its raft leader answers "no leader" at once instead of serving stale
# data or hanging until the deadline (etcd's rpctypes.MetadataRequireLeaderKey).
_METADATA = (("hasleader", "true"),)
_CHANNEL_OPTIONS = [
    # gRPC's default reconnect backoff grows to 120 s: after a long outage the channel
    # would ignore a recovered etcd for minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# WatchRequest{progress_request: {}} (field 3, etcd >= 3.4). python-etcd3's proto predates
# it; protobuf keeps unknown fields, so the parsed bytes serialise back unchanged.
_PROGRESS_REQUEST = etcdrpc.WatchRequest.FromString(b"\x1a\x00")
_EVENT_DELETE = 1  # mvccpb.Event.DELETE
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 2.0
_PROBE_INTERVAL = 1.0


class _LeaseNotFound(DCSError):
    """A put named a lease etcd no longer has (it expired): grant a new one and retry."""


def _error(target: str, what: str, exc: grpc.RpcError, timeout: float) -> DCSError:
    """One line naming the endpoints, the operation and etcd's or gRPC's reason."""
    code = exc.code() if hasattr(exc, "code") else None
    details = " ".join(str(exc.details() if hasattr(exc, "details") else exc).split())
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DCSError(f"etcd {target}: {what}: no answer within {timeout:.1f} s")
    if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
        return _LeaseNotFound(f"etcd {target}: {what}: {details}")
    name = code.name if code is not None else "error"
    return DCSError(f"etcd {target}: {what} failed ({name}): {details}")


# -- endpoints ---------------------------------------------------------------------
def _parse_endpoint(host: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(host, tuple):
        return host[0].strip("[]"), int(host[1])
    rest = host.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        addr, _, port = rest[1:].partition("]")
        return addr, int(port.lstrip(":") or 2379)
    addr, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    return addr, int(port or 2379)


def grpc_target(hosts: Sequence[str | tuple[str, int]]) -> str:
    """One gRPC target for all endpoints: `ipv4:a:p,b:p` fails over between them.

    Names are resolved once here (the ipv4:/ipv6: schemes take addresses only); a mix of
    families, or a name that does not resolve, falls back to the first endpoint alone.
    """
    endpoints = [_parse_endpoint(h) for h in hosts]
    if not endpoints:
        raise DCSError("no etcd hosts configured: set etcd3.hosts")
    first_host, first_port = endpoints[0]
    first = f"[{first_host}]:{first_port}" if ":" in first_host else f"{first_host}:{first_port}"
    if len(endpoints) == 1:
        return first
    addresses: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
    for host, port in endpoints:
        try:
            addresses.append((ipaddress.ip_address(host), port))
        except ValueError:
            try:
                info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("cannot resolve etcd host %s (%s); using %s only", host, exc, first)
                return first
            addresses.append((ipaddress.ip_address(info[0][4][0]), port))
    families = {a.version for a, _ in addresses}
    if families == {4}:
        return "ipv4:" + ",".join(f"{a}:{p}" for a, p in addresses)
    if families == {6}:
        return "ipv6:" + ",".join(f"[{a}]:{p}" for a, p in addresses)
    log.warning("etcd hosts mix IPv4 and IPv6; using %s only", first)
    return first


# -- messages ----------------------------------------------------------------------
def _b(s: str) -> bytes:
    return s.encode()


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _cmp(key: str, target: str, value: Any) -> Any:
    targets = {"create": etcdrpc.Compare.CREATE, "mod": etcdrpc.Compare.MOD,
               "value": etcdrpc.Compare.VALUE, "lease": etcdrpc.Compare.LEASE}
    field = {"create": "create_revision", "mod": "mod_revision"}.get(target, target)
    return etcdrpc.Compare(key=_b(key), target=targets[target], result=etcdrpc.Compare.EQUAL,
                           **{field: _b(value) if target == "value" else value})


def _version_cmp(key: str, version: int) -> Any:
    """Version 0 means 'absent': compare the create revision, else the mod revision."""
    return _cmp(key, "create", 0) if version == 0 else _cmp(key, "mod", version)


def _put(key: str, value: str, lease: int = 0) -> Any:
    return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=_b(key), value=_b(value), lease=lease))


def _delete(key: str) -> Any:
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=_b(key)))


def _txn(compare: list[Any], success: list[Any], failure: list[Any] | None = None) -> Any:
    return etcdrpc.TxnRequest(compare=compare, success=success, failure=failure or [])


class _Rpc:
    """The channel and stubs; every unary call bounded by a deadline, failures -> DCSError."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.kv = etcdrpc.KVStub(self.channel)
        self.lease = etcdrpc.LeaseStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)

    def call(self, what: str, method: Callable[..., Any], request: Any, deadline: float) -> Any:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DCSError(f"etcd {self.target}: {what}: out of time before the call")
        try:
            return method(request, timeout=left, metadata=_METADATA)
        except grpc.RpcError as exc:
            raise _error(self.target, what, exc, left) from None
        except ValueError as exc:  # grpc raises it on a closed channel
            raise DCSError(f"etcd {self.target}: {what}: {exc}") from None

    def keepalive(self, lease_id: int, deadline: float) -> int:
        """One lease keepalive round trip; the TTL left (0: the lease is gone)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise DCSError(f"etcd {self.target}: lease keepalive: out of time before the call")
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)
        try:
            stream = self.lease.LeaseKeepAlive(iter([request]), timeout=left, metadata=_METADATA)
        except ValueError as exc:
            raise DCSError(f"etcd {self.target}: lease keepalive: {exc}") from None
        try:
            for response in stream:
                return int(response.TTL)
            raise DCSError(f"etcd {self.target}: lease keepalive: the stream closed without an answer")
        except grpc.RpcError as exc:
            raise _error(self.target, "lease keepalive", exc, left) from None
        finally:
            stream.cancel()

    def close(self) -> None:
        self.channel.close()


class Etcd3DCS(DCS):
    """One agent's connection to etcd v3, with Patroni's keys and values."""

    def __init__(
        self, hosts: Sequence[str | tuple[str, int]], prefix: str, ttl: int, timeout: float
    ) -> None:
        super().__init__(prefix if prefix.endswith("/") else prefix + "/", ttl, timeout)
        self.target = grpc_target(hosts)
        self._rpc = _Rpc(self.target)
        self._lease_id = 0
        self._watch: _PrefixWatch | None = None

    def _key(self, rel: str) -> str:
        return self.prefix + rel

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    # -- session -------------------------------------------------------------------
    @property
    def lease_id(self) -> int:
        return self._lease_id

    def adopt_lease(self, lease_id: int) -> None:
        self._lease_id = int(lease_id)

    def grant_lease(self) -> int:
        return self._grant(self._deadline())

    def _grant(self, deadline: float) -> int:
        request = etcdrpc.LeaseGrantRequest(TTL=self.ttl)
        response = self._rpc.call("lease grant", self._rpc.lease.LeaseGrant, request, deadline)
        if response.error:
            raise DCSError(f"etcd {self.target}: lease grant: {response.error}")
        self._lease_id = int(response.ID)
        return self._lease_id

    def refresh_lease(self) -> bool:
        lease = self._lease_id
        if not lease:
            return False
        if self._rpc.keepalive(lease, self._deadline()) > 0:
            return True
        # An expired lease answers TTL 0 instead of an error.
        if self._lease_id == lease:
            self._lease_id = 0
        return False

    def _with_lease(self, what: str, method: Callable[..., Any], build: Callable[[int], Any]) -> Any:
        """Run a write that attaches our lease; if etcd lost the lease, grant one and retry once."""
        deadline = self._deadline()
        for attempt in (1, 2):
            lease = self._lease_id or self._grant(deadline)
            try:
                return self._rpc.call(what, method, build(lease), deadline)
            except _LeaseNotFound:
                if attempt == 2:
                    raise
                log.warning("etcd lost lease %x; granting a new one", lease)
                if self._lease_id == lease:
                    self._lease_id = 0
        raise AssertionError("unreachable")

    # -- reads ---------------------------------------------------------------------
    def _list(self, deadline: float) -> tuple[dict[str, tuple[str, int, int]], int]:
        start = _b(self.prefix)
        request = etcdrpc.RangeRequest(key=start, range_end=_prefix_end(start))
        response = self._rpc.call("range", self._rpc.kv.Range, request, deadline)
        items = {
            kv.key.decode("utf-8", "replace")[len(self.prefix):]: (
                kv.value.decode("utf-8", "replace"), int(kv.mod_revision), int(kv.lease))
            for kv in response.kvs
        }
        return items, int(response.header.revision)

    def read_cluster(self) -> ClusterView:
        items, revision = self._list(self._deadline())
        return ClusterView.from_kv(items, revision)

    def start_watch(self, on_change: Callable[[ClusterView], None]) -> None:
        if self._watch is not None:
            raise RuntimeError("the etcd watch is already running")
        self._watch = _PrefixWatch(self._rpc, self.prefix, self._list, self.timeout, on_change)
        self._watch.start()

    def cached_cluster(self) -> ClusterView | None:
        return self._watch.view() if self._watch is not None else None

    # -- writes --------------------------------------------------------------------
    def touch_member(self, name: str, data: dict[str, Any]) -> None:
        key, value = self._key(KEY_MEMBERS + name), dumps(data)
        self._with_lease(
            "member write", self._rpc.kv.Put,
            lambda lease: etcdrpc.PutRequest(key=_b(key), value=_b(value), lease=lease))

    def delete_member(self, name: str) -> None:
        request = etcdrpc.DeleteRangeRequest(key=_b(self._key(KEY_MEMBERS + name)))
        self._rpc.call("member delete", self._rpc.kv.DeleteRange, request, self._deadline())

    def acquire_leader(self, name: str) -> bool:
        key = self._key(KEY_LEADER)
        response = self._with_lease(
            "leader acquire", self._rpc.kv.Txn,
            lambda lease: _txn([_cmp(key, "create", 0)], [_put(key, name, lease)]))
        return bool(response.succeeded)

    def ensure_leader(self, name: str) -> bool:
        key = self._key(KEY_LEADER)

        def build(lease: int) -> Any:
            # Ours: re-attach to our lease only if it differs (a keepalive renews it anyway).
            ours = _txn([_cmp(key, "lease", lease)], [], [_put(key, name, lease)])
            # Absent: re-create; held by someone else: change nothing.
            absent = _txn([_cmp(key, "create", 0)], [_put(key, name, lease)])
            return _txn([_cmp(key, "value", name)],
                        [etcdrpc.RequestOp(request_txn=ours)], [etcdrpc.RequestOp(request_txn=absent)])

        response = self._with_lease("leader renew", self._rpc.kv.Txn, build)
        return bool(response.succeeded or response.responses[0].response_txn.succeeded)

    def release_leader(self, name: str) -> bool:
        key = self._key(KEY_LEADER)
        request = _txn([_cmp(key, "value", name)], [_delete(key)])
        return bool(self._rpc.call("leader release", self._rpc.kv.Txn, request, self._deadline()).succeeded)

    def _cas(self, what: str, rel: str, value: str, version: int) -> bool:
        key = self._key(rel)
        request = _txn([_version_cmp(key, version)], [_put(key, value)])
        return bool(self._rpc.call(what, self._rpc.kv.Txn, request, self._deadline()).succeeded)

    def initialize(self, sysid: str, create: bool, version: int = 0) -> bool:
        return self._cas("initialize write", KEY_INITIALIZE, sysid, 0 if create else version)

    def delete_initialize(self, version: int) -> bool:
        return self._cas_delete("initialize delete", KEY_INITIALIZE, version)

    def set_config(self, value: dict[str, Any], version: int) -> bool:
        return self._cas("config write", KEY_CONFIG, dumps(value), version)

    def set_failover(self, value: dict[str, Any], version: int) -> bool:
        return self._cas("failover write", KEY_FAILOVER, dumps(value), version)

    def _cas_delete(self, what: str, rel: str, version: int) -> bool:
        key = self._key(rel)
        request = _txn([_version_cmp(key, version)], [_delete(key)])
        return bool(self._rpc.call(what, self._rpc.kv.Txn, request, self._deadline()).succeeded)

    def delete_failover(self, version: int) -> bool:
        return self._cas_delete("failover delete", KEY_FAILOVER, version)

    def set_sync(self, value: dict[str, Any], version: int) -> bool:
        return self._cas("sync write", KEY_SYNC, dumps(value), version)

    def _put_plain(self, what: str, rel: str, value: str) -> None:
        request = etcdrpc.PutRequest(key=_b(self._key(rel)), value=_b(value))
        self._rpc.call(what, self._rpc.kv.Put, request, self._deadline())

    def set_history(self, value: list[Any]) -> None:
        self._put_plain("history write", KEY_HISTORY, dumps(value))

    def set_status(self, value: dict[str, Any]) -> None:
        self._put_plain("status write", KEY_STATUS, dumps(value))

    def set_failsafe(self, value: dict[str, Any]) -> None:
        self._put_plain("failsafe write", KEY_FAILSAFE, dumps(value))

    def delete_cluster(self) -> None:
        start = _b(self.prefix)
        request = etcdrpc.DeleteRangeRequest(key=start, range_end=_prefix_end(start))
        self._rpc.call("cluster delete", self._rpc.kv.DeleteRange, request, self._deadline())

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self._rpc.close()


class _PrefixWatch:
    """A daemon thread keeping an in-memory copy of the prefix current.

    List, then watch from the listed revision + 1; on any break (error, compaction, cancel,
    no answer to our progress probes) mark the cache stale, back off and list again.
    """

    def __init__(
        self,
        rpc: _Rpc,
        prefix: str,
        list_fn: Callable[[float], tuple[dict[str, tuple[str, int, int]], int]],
        timeout: float,
        on_change: Callable[[ClusterView], None],
    ) -> None:
        self._rpc = rpc
        self._prefix = prefix
        self._list = list_fn
        self._timeout = timeout
        self._on_change = on_change
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        self._view: ClusterView | None = None
        self._synced = False
        self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def view(self) -> ClusterView | None:
        return self._view

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        self._thread.join(self._timeout + 2)

    def _run(self) -> None:
        backoff, failing = _BACKOFF_MIN, False
        while not self._stop.is_set():
            self._synced = False
            reason: str | None
            try:
                items, revision = self._list(time.monotonic() + self._timeout)
                reason = self._follow(items, revision)
            except DCSError as exc:
                reason = str(exc)
            except grpc.RpcError as exc:
                reason = str(_error(self._rpc.target, "watch", exc, self._timeout))
            except Exception:  # the thread must survive anything (it is the cache)
                log.exception("etcd watch failed unexpectedly")
                reason = None
            self._view = None
            if self._stop.is_set():
                break
            if self._synced:
                backoff, failing = _BACKOFF_MIN, False
            if reason:
                # One warning per outage; the retries (every <= 2 s) go to debug.
                (log.debug if failing else log.warning)("etcd watch broken: %s; retrying", reason)
                failing = True
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _follow(self, cache: dict[str, tuple[str, int, int]], revision: int) -> str | None:
        """Stream events into `cache` until the stream breaks; return why (None: closing)."""
        start = _b(self._prefix)
        create = etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
            key=start, range_end=_prefix_end(start), start_revision=revision + 1))
        ended = threading.Event()
        last_heard = [time.monotonic()]
        holder: list[Any] = []

        def requests() -> Iterator[Any]:
            # Runs in gRPC's sender thread. A frozen etcd keeps the TCP connection open and
            # never answers: probe it, and cancel the stream if the probes go unanswered.
            yield create
            while not ended.wait(_PROBE_INTERVAL):
                if time.monotonic() - last_heard[0] > _PROBE_INTERVAL + self._timeout:
                    holder[0].cancel()
                    return
                yield _PROGRESS_REQUEST

        call = self._rpc.watch.Watch(requests(), metadata=_METADATA)
        holder.append(call)
        with self._lock:
            self._call = call
        if self._stop.is_set():
            call.cancel()
        try:
            for response in call:
                last_heard[0] = time.monotonic()
                if response.compact_revision:
                    return f"history compacted at revision {response.compact_revision}, re-listing"
                if response.canceled:
                    return f"canceled by etcd: {response.cancel_reason or 'no reason given'}"
                if response.created:
                    self._synced = True
                elif not response.events:
                    continue  # the answer to a progress probe
                for event in response.events:
                    key = event.kv.key.decode("utf-8", "replace")[len(self._prefix):]
                    if event.type == _EVENT_DELETE:
                        cache.pop(key, None)
                    else:
                        cache[key] = (event.kv.value.decode("utf-8", "replace"),
                                      int(event.kv.mod_revision), int(event.kv.lease))
                    revision = max(revision, int(event.kv.mod_revision))
                self._publish(ClusterView.from_kv(cache, revision))
        except grpc.RpcError as exc:
            if self._stop.is_set():
                return None
            if exc.code() == grpc.StatusCode.CANCELLED:
                silent = time.monotonic() - last_heard[0]
                return f"no answer from etcd for {silent:.1f} s"
            raise
        finally:
            ended.set()
            call.cancel()
            with self._lock:
                self._call = None
        return "the stream ended"

    def _publish(self, view: ClusterView) -> None:
        self._view = view
        try:
            self._on_change(view)
        except Exception:  # a consumer's bug must not stop the cache
            log.exception("etcd watch: on_change callback failed")
