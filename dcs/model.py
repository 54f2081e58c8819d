"""The cluster as Patroni stores it in the DCS, and the codecs for its values.

Keys live under /<namespace>/<scope>/ (namespace defaults to "service"). Values are
exactly Patroni 4's: `leader` is the plain member name, `members/<name>` compact JSON,
`initialize` the system identifier as a string ("" while a bootstrap is in progress),
`config`/`failover`/`sync`/`status`/`history`/`failsafe` compact JSON. Values written by
someone else may be anything: decoding never raises, a malformed value reads as absent
(and the reason is kept in `ClusterView.problems` for the log).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

KEY_INITIALIZE = "initialize"
KEY_CONFIG = "config"
KEY_LEADER = "leader"
KEY_MEMBERS = "members/"
KEY_FAILOVER = "failover"
KEY_SYNC = "sync"
KEY_HISTORY = "history"
KEY_STATUS = "status"
KEY_FAILSAFE = "failsafe"


def cluster_prefix(namespace: str, scope: str) -> str:
    """'/service/demo/' for namespace 'service' (or '/service/', as Patroni accepts both)."""
    ns = namespace.strip("/") or "service"
    return f"/{ns}/{scope}/"


def dumps(value: Any) -> str:
    """Compact JSON, as Patroni writes it."""
    return orjson.dumps(value).decode()


def loads_object(raw: str | None) -> dict[str, Any] | None:
    """A JSON object value, or None if absent, empty or malformed."""
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _decode_failover(raw: str, problems: list[str]) -> dict[str, Any] | None:
    """Patroni's failover value: a JSON object, or the legacy `leader:candidate` string."""
    text = raw.strip()
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
        # Patroni reads any non-JSON string as the legacy form (Failover.from_node); a
        # value that merely looks like broken JSON is someone's mistake, not a request.
        if text[0] not in "{[\"":
            lead, _, cand = text.partition(":")
            return {"leader": lead.strip() or None, "member": cand.strip() or None}
    if isinstance(value, dict):
        return value
    problems.append(f"ignoring malformed 'failover' value: {raw[:80]!r}")
    return None


@dataclass(frozen=True)
class Member:
    """One `members/<name>` key."""

    name: str
    data: dict[str, Any]
    version: int = 0
    lease: int = 0

    @property
    def role(self) -> str:
        return str(self.data.get("role", "uninitialized"))

    @property
    def state(self) -> str:
        return str(self.data.get("state", "unknown"))

    @property
    def api_url(self) -> str | None:
        v = self.data.get("api_url")
        return v if isinstance(v, str) else None

    @property
    def conn_url(self) -> str | None:
        v = self.data.get("conn_url")
        return v if isinstance(v, str) else None

    @property
    def tags(self) -> dict[str, Any]:
        v = self.data.get("tags")
        return v if isinstance(v, dict) else {}

    @property
    def timeline(self) -> int | None:
        v = self.data.get("timeline")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    @property
    def xlog_location(self) -> int | None:
        v = self.data.get("xlog_location")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    @property
    def nofailover(self) -> bool:
        v = self.tags.get("nofailover", False)
        return v is True or (isinstance(v, str) and v.lower() in ("true", "on", "yes", "1"))

    @property
    def failover_priority(self) -> int:
        v = self.tags.get("failover_priority", 1)
        try:
            return int(v)
        except (TypeError, ValueError):
            return 1

    @staticmethod
    def decode(name: str, raw: str | None, version: int = 0, lease: int = 0) -> Member | None:
        data = loads_object(raw)
        return None if data is None else Member(name, data, version, lease)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.data, "version": self.version, "lease": self.lease}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Member:
        return Member(d["name"], d.get("data") or {}, d.get("version", 0), d.get("lease", 0))


@dataclass(frozen=True)
class Versioned:
    """A persistent key's decoded value and the version to CAS against (0 = absent)."""

    value: Any = None
    version: int = 0


@dataclass(frozen=True)
class ClusterView:
    """One consistent reading of the cluster prefix."""

    initialize: str | None = None  # None: key absent ("uninitialized"); "": bootstrap running
    initialize_version: int = 0
    config: Versioned = field(default_factory=Versioned)
    leader: str | None = None
    leader_version: int = 0
    leader_lease: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    failover: Versioned = field(default_factory=Versioned)
    sync: Versioned = field(default_factory=Versioned)
    history: Versioned = field(default_factory=Versioned)
    status: Versioned = field(default_factory=Versioned)
    failsafe: Versioned = field(default_factory=Versioned)
    revision: int = 0
    problems: tuple[str, ...] = ()

    @staticmethod
    def from_kv(items: dict[str, tuple[str, int, int]], revision: int) -> ClusterView:
        """Build a view from {relative key: (value, mod_revision, lease)}."""
        problems: list[str] = []
        members: dict[str, Member] = {}

        def obj(key: str) -> Versioned:
            if key not in items:
                return Versioned()
            raw, ver, _ = items[key]
            value = loads_object(raw)
            if value is None and raw not in ("", "{}"):
                problems.append(f"ignoring malformed {key!r} value: {raw[:80]!r}")
            return Versioned(value, ver)

        for key, (raw, ver, lease) in items.items():
            if key.startswith(KEY_MEMBERS) and len(key) > len(KEY_MEMBERS):
                name = key[len(KEY_MEMBERS):]
                m = Member.decode(name, raw, ver, lease)
                if m is None:
                    problems.append(f"ignoring malformed member {name!r}")
                else:
                    members[name] = m
        history = Versioned()
        if KEY_HISTORY in items:
            raw, ver, _ = items[KEY_HISTORY]
            try:
                hv = orjson.loads(raw) if raw else []
            except orjson.JSONDecodeError:
                hv = None
            if not isinstance(hv, list):
                problems.append("ignoring malformed 'history' value")
                hv = []
            history = Versioned(hv, ver)
        failover = Versioned()
        if KEY_FAILOVER in items:
            raw, ver, _ = items[KEY_FAILOVER]
            failover = Versioned(_decode_failover(raw, problems), ver)
        leader, lver, llease = None, 0, 0
        if KEY_LEADER in items:
            raw, lver, llease = items[KEY_LEADER]
            leader = raw or None
        init = items[KEY_INITIALIZE][0] if KEY_INITIALIZE in items else None
        init_version = items[KEY_INITIALIZE][1] if KEY_INITIALIZE in items else 0
        return ClusterView(
            initialize=init,
            initialize_version=init_version,
            config=obj(KEY_CONFIG),
            leader=leader,
            leader_version=lver,
            leader_lease=llease,
            members=members,
            failover=failover,
            sync=obj(KEY_SYNC),
            history=history,
            status=obj(KEY_STATUS),
            failsafe=obj(KEY_FAILSAFE),
            revision=revision,
            problems=tuple(problems),
        )

    def to_dict(self) -> dict[str, Any]:
        """For the shared state (orjson-able) and for debugging dumps."""

        def v(x: Versioned) -> dict[str, Any]:
            return {"value": x.value, "version": x.version}

        return {
            "initialize": self.initialize,
            "initialize_version": self.initialize_version,
            "config": v(self.config),
            "leader": self.leader,
            "leader_version": self.leader_version,
            "leader_lease": self.leader_lease,
            "members": {n: m.to_dict() for n, m in self.members.items()},
            "failover": v(self.failover),
            "sync": v(self.sync),
            "history": v(self.history),
            "status": v(self.status),
            "failsafe": v(self.failsafe),
            "revision": self.revision,
            "problems": list(self.problems),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ClusterView:
        def v(x: Any) -> Versioned:
            return Versioned(x.get("value"), x.get("version", 0)) if isinstance(x, dict) else Versioned()

        return ClusterView(
            initialize=d.get("initialize"),
            initialize_version=d.get("initialize_version", 0),
            config=v(d.get("config")),
            leader=d.get("leader"),
            leader_version=d.get("leader_version", 0),
            leader_lease=d.get("leader_lease", 0),
            members={n: Member.from_dict(m) for n, m in (d.get("members") or {}).items()},
            failover=v(d.get("failover")),
            sync=v(d.get("sync")),
            history=v(d.get("history")),
            status=v(d.get("status")),
            failsafe=v(d.get("failsafe")),
            revision=d.get("revision", 0),
            problems=tuple(d.get("problems") or ()),
        )

    @property
    def optime(self) -> int | None:
        s = self.status.value
        if isinstance(s, dict) and isinstance(s.get("optime"), int) and not isinstance(s["optime"], bool):
            return int(s["optime"])
        return None
