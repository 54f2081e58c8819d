"""Which members a command acts on, chosen from one ClusterView with patronictl's role words.

Roles: `leader` (whoever holds the leader key), `primary` / `standby-leader` (the leader,
if it is that kind), `replica` / `standby` (everyone else), `any`.
"""
from __future__ import annotations

from collections.abc import Sequence

from pgwarden.ctl.errors import CtlError, UsageError
from pgwarden.dcs.model import ClusterView, Member

ROLES = ("leader", "primary", "standby-leader", "replica", "standby", "any")
_LEADER_ROLES = ("leader", "primary", "standby-leader")
# What the REST API's `role` filter calls each (POST /restart): a guard against the role
# changing between our read and the member acting on the request.
API_ROLE = {"leader": None, "any": None, "primary": "primary", "standby-leader": "standby_leader",
            "replica": "replica", "standby": "replica"}


def leader_member(view: ClusterView) -> Member | None:
    return view.members.get(view.leader) if view.leader else None


def members_with_role(view: ClusterView, role: str) -> list[Member]:
    """Members in name order that have `role` right now, by the DCS."""
    leader = leader_member(view)
    if role in _LEADER_ROLES:
        if leader is None:
            return []
        is_standby = leader.role == "standby_leader"
        wanted = role == "leader" or (role == "standby-leader") == is_standby
        return [leader] if wanted else []
    return [view.members[n] for n in sorted(view.members)
            if role == "any" or n != view.leader]


def one_member(view: ClusterView, role: str | None, name: str | None) -> Member | None:
    """For dsn and query: the named member, else the first with `role` (the leader by default)."""
    if name is not None and role is not None:
        raise UsageError("--role and --member are mutually exclusive options")
    if name is not None:
        return view.members.get(name)
    found = members_with_role(view, role or "leader")
    return found[0] if found else None


def select_members(view: ClusterView, cluster: str, names: Sequence[str], role: str) -> list[Member]:
    """The named members (each must exist and have `role`), or every member with `role`."""
    with_role = members_with_role(view, role)
    if not names:
        if not with_role:
            raise CtlError(f"cluster {cluster} has no {role} member" if role != "any"
                           else f"cluster {cluster} has no members")
        return with_role
    allowed = {m.name for m in with_role}
    chosen: list[Member] = []
    for name in dict.fromkeys(names):
        if name not in view.members:
            raise CtlError(f"{name} is not a member of cluster {cluster} "
                           f"(members: {', '.join(sorted(view.members)) or 'none'})")
        if name not in allowed:
            raise CtlError(f"{name} is not a {role} member of cluster {cluster}")
        chosen.append(view.members[name])
    return chosen


def members_leader_first(view: ClusterView) -> list[Member]:
    """Every member with an API, the leader first (whom patronictl asks first for pause/flush)."""
    leader = leader_member(view)
    rest = [view.members[n] for n in sorted(view.members) if n != view.leader]
    return [m for m in ([leader] if leader else []) + rest if m.api_url]


def failover_candidates(view: ClusterView) -> list[str]:
    """Members that may be promoted: not the leader, no `nofailover` tag."""
    return sorted(n for n, m in view.members.items() if n != view.leader and not m.nofailover)
