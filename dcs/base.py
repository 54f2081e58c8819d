"""The DCS interface every backend implements, and its atomicity contract.

Contract (every backend passes tests/integration/test_dcs_contract.py against a real server):

* Every call finishes within `timeout` seconds (the per-call budget given to the
  constructor, derived from `retry_timeout`) or raises DCSError. No call blocks forever,
  even against a frozen (SIGSTOPped) server.
* One session lease per agent, TTL = `ttl`. The member key and the leader key are both
  attached to it: when the agent dies, both vanish together when the lease expires.
* create-if-absent: `initialize(create=True)`, `acquire_leader`, `set_config(version=0)`.
  Exactly one of several concurrent callers succeeds; the others get False.
* compare-and-swap on the version read earlier: `set_config`, `set_failover`,
  `set_sync`, `initialize(create=False)`; a stale version gets False, never an overwrite.
* `release_leader` deletes the leader key only if its value is still our name.
* `ensure_leader` is the lock renewal: True only if the key holds our name (re-attaching
  it to our current lease if needed, or re-creating it if absent); False means the lock
  is authoritatively lost and the caller must demote at once.
* `read_cluster` is one consistent read of the whole prefix (linearizable).
* The watch delivers every change after the revision of the last read, survives server
  restarts with backoff (no busy loop while the server is down), and re-lists when its
  history is compacted. `cached_cluster()` serves reads from that cache.
"""
from __future__ import annotations

import abc
from typing import Any, Callable

from pgwarden.dcs.model import ClusterView


class DCS(abc.ABC):
    """One agent's connection to the cluster's keys under `prefix`."""

    def __init__(self, prefix: str, ttl: int, timeout: float) -> None:
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout

    # -- session -------------------------------------------------------------------
    @abc.abstractmethod
    def grant_lease(self) -> int:
        """Create a new session lease with TTL `ttl`; return its id."""

    @abc.abstractmethod
    def refresh_lease(self) -> bool:
        """Keep the session alive. False if the lease no longer exists (grant a new one)."""

    @property
    @abc.abstractmethod
    def lease_id(self) -> int:
        """The current lease id (0 if none)."""

    @abc.abstractmethod
    def adopt_lease(self, lease_id: int) -> None:
        """Continue with a lease granted earlier (a restarted lease worker keeps the session,
        so a worker crash never costs the leader key). The next refresh confirms it."""

    def set_ttl(self, ttl: int) -> None:
        """Use `ttl` for the next lease granted."""
        self.ttl = ttl

    # -- reads ---------------------------------------------------------------------
    @abc.abstractmethod
    def read_cluster(self) -> ClusterView:
        """A fresh, consistent read of every key of the cluster."""

    @abc.abstractmethod
    def start_watch(self, on_change: Callable[[ClusterView], None]) -> None:
        """Watch the prefix in a background thread; call on_change with the new cached view."""

    @abc.abstractmethod
    def cached_cluster(self) -> ClusterView | None:
        """The view kept current by the watch, or None while the watch is not in sync."""

    # -- writes --------------------------------------------------------------------
    @abc.abstractmethod
    def touch_member(self, name: str, data: dict[str, Any]) -> None:
        """Write members/<name> attached to our lease."""

    @abc.abstractmethod
    def delete_member(self, name: str) -> None:
        """Remove members/<name> (a clean shutdown)."""

    @abc.abstractmethod
    def acquire_leader(self, name: str) -> bool:
        """Create the leader key with our name and lease if it does not exist."""

    @abc.abstractmethod
    def ensure_leader(self, name: str) -> bool:
        """Confirm we still hold the leader key (see the contract above)."""

    @abc.abstractmethod
    def release_leader(self, name: str) -> bool:
        """Delete the leader key if it still holds our name."""

    @abc.abstractmethod
    def initialize(self, sysid: str, create: bool, version: int = 0) -> bool:
        """create=True: create-if-absent (race); else CAS on `version`."""

    @abc.abstractmethod
    def delete_initialize(self, version: int) -> bool:
        """Delete the initialize key if its version is still `version` (failed bootstrap)."""

    @abc.abstractmethod
    def set_config(self, value: dict[str, Any], version: int) -> bool:
        """CAS on the config key; version 0 means create-if-absent."""

    @abc.abstractmethod
    def set_failover(self, value: dict[str, Any], version: int) -> bool:
        """CAS on the failover key; version 0 means create-if-absent."""

    @abc.abstractmethod
    def delete_failover(self, version: int) -> bool:
        """Delete the failover key if its version is still `version`."""

    @abc.abstractmethod
    def set_sync(self, value: dict[str, Any], version: int) -> bool:
        """CAS on the sync key; version 0 means create-if-absent."""

    @abc.abstractmethod
    def set_history(self, value: list[Any]) -> None:
        """Overwrite the history key (written by the leader only)."""

    @abc.abstractmethod
    def set_status(self, value: dict[str, Any]) -> None:
        """Overwrite the status key (written by the leader only, when changed)."""

    @abc.abstractmethod
    def set_failsafe(self, value: dict[str, Any]) -> None:
        """Overwrite the failsafe key ({name: api_url}; written by the leader only)."""

    @abc.abstractmethod
    def delete_cluster(self) -> None:
        """Delete every key under the prefix (pgwardenctl remove)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the watch, revoke nothing (the lease expires by itself), close channels."""
