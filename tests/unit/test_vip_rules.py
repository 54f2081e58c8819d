"""Rule 2 (VIP only with the lease), row by row, and the network worker's reading of sections."""
from __future__ import annotations

import math
from typing import Any

import pytest

from pgwarden.core.shm import SectionView
from pgwarden.netroute.rules import may_hold_vip, vip_action
from pgwarden.workers.network_inputs import evaluate, stale_after
from pgwarden.workers.network_worker import period

NOW = 1_000_000.0  # a realistic CLOCK_MONOTONIC value (11 days of uptime)
MARGIN = 5.0
GOOD = dict(intent_vip=True, pg_running=True, pg_role="primary", now=NOW,
            lease_deadline=NOW + 30.0, safety_margin=MARGIN, paused=False)


def rule(**changes: object) -> tuple[bool, str]:
    return may_hold_vip(**{**GOOD, **changes})  # type: ignore[arg-type]


def test_holds_when_everything_confirms() -> None:
    ok, reason = rule()
    assert ok, reason
    assert "confirmed lease" in reason


@pytest.mark.parametrize("changes, fragment", [
    ({"intent_vip": False}, "intent"),
    ({"pg_running": False}, "not running"),
    ({"pg_role": "replica"}, "not a primary"),
    ({"pg_role": None}, "not a primary"),
    ({"pg_role": "uninitialized"}, "not a primary"),
    ({"lease_deadline": NOW}, "lease"),
    ({"lease_deadline": NOW + MARGIN}, "lease"),
    ({"lease_deadline": 0.0}, "lease"),
    ({"lease_deadline": math.nan}, "lease"),
    ({"safety_margin": math.nan}, "lease"),
    ({"intent_vip": False, "pg_running": False, "lease_deadline": 0.0}, "intent"),
])
def test_denies(changes: dict[str, object], fragment: str) -> None:
    ok, reason = rule(**changes)
    assert not ok
    assert fragment in reason


def test_boundary_exactly_at_deadline_minus_margin_does_not_hold() -> None:
    deadline = NOW + 12.345
    boundary = deadline - MARGIN
    ok, _ = rule(now=boundary, lease_deadline=deadline)
    assert not ok


def test_boundary_one_nanosecond_earlier_holds() -> None:
    deadline = NOW + 12.345
    earlier = (deadline - MARGIN) - 1e-9
    assert earlier < deadline - MARGIN  # representable at this magnitude
    ok, reason = rule(now=earlier, lease_deadline=deadline)
    assert ok, reason


def test_zero_margin_boundary() -> None:
    assert not rule(now=NOW, lease_deadline=NOW, safety_margin=0.0)[0]
    assert rule(now=NOW - 1e-9, lease_deadline=NOW, safety_margin=0.0)[0]


@pytest.mark.parametrize("changes", [{}, {"intent_vip": False}, {"lease_deadline": 0.0}])
def test_paused_reports_leave_as_is(changes: dict[str, object]) -> None:
    ok, reason = rule(paused=True, **changes)
    assert not ok
    assert reason.startswith("cluster paused")


@pytest.mark.parametrize("allowed, paused, present, action", [
    (True, False, False, "add"),
    (True, False, True, "keep"),
    (False, False, True, "remove"),
    (False, False, False, "keep"),
    (False, True, True, "keep"),   # pause: never remove
    (False, True, False, "keep"),  # pause: never add
    (True, True, False, "keep"),
])
def test_vip_action(allowed: bool, paused: bool, present: bool, action: str) -> None:
    assert vip_action(allowed, paused, present) == action


# -- the worker's reading of the shared state ------------------------------------------

NOW_NS = 2_000_000_000_000
T = NOW_NS / 1e9


def view(name: str, data: dict[str, object], age: float = 0.1, torn: bool = False) -> SectionView:
    hb = NOW_NS - int(age * 1e9)
    return SectionView(name, 1, 1, hb, data, torn=torn)


def sections(**over: dict[str, object]) -> tuple[SectionView, SectionView, SectionView]:
    sup = {"intent": {"vip": True}, "safety_margin": MARGIN, "paused": False,
           "dynamic": {"loop_wait": 10}}
    lease = {"lease_deadline": T + 30.0, "holds_leader": True}
    pg = {"running": True, "role": "primary"}
    return (view("supervisor", {**sup, **over.get("sup", {})}),
            view("lease", {**lease, **over.get("lease", {})}),
            view("postgres", {**pg, **over.get("pg", {})}))


def test_evaluate_allows_a_confirmed_primary() -> None:
    v = evaluate(*sections(), T, NOW_NS)
    assert v.allowed and not v.paused, v.reason
    assert v.hold_until == pytest.approx(T + 30.0 - MARGIN)


def test_evaluate_requires_the_leader_key() -> None:
    v = evaluate(*sections(lease={"holds_leader": False}), T, NOW_NS)
    assert not v.allowed and "leader key" in v.reason


def test_evaluate_pause() -> None:
    v = evaluate(*sections(sup={"paused": True}, lease={"lease_deadline": 0.0}), T, NOW_NS)
    assert v.paused and not v.allowed


@pytest.mark.parametrize("which", ["supervisor", "lease", "postgres"])
def test_evaluate_doubts_torn_stale_and_missing(which: str) -> None:
    base = {v.name: v for v in sections()}
    for bad, fragment in [(SectionView(which, 1, 1, NOW_NS, {}, torn=True), "torn"),
                          (SectionView(which, 0, 0, 0, {}), "not published"),
                          (view(which, base[which].data, age=13.0), "stale")]:
        got = {**base, which: bad}
        v = evaluate(got["supervisor"], got["lease"], got["postgres"], T, NOW_NS)
        assert not v.allowed and not v.paused
        assert fragment in v.reason


def test_evaluate_stale_supervisor_overrides_pause() -> None:
    sup, lease, pg = sections(sup={"paused": True})
    v = evaluate(view("supervisor", sup.data, age=60.0), lease, pg, T, NOW_NS)
    assert not v.paused and not v.allowed


def test_evaluate_without_margin_is_a_doubt() -> None:
    sup, lease, pg = sections()
    data = {k: val for k, val in sup.data.items() if k != "safety_margin"}
    v = evaluate(view("supervisor", data), lease, pg, T, NOW_NS)
    assert not v.allowed and "safety_margin" in v.reason


def test_stale_after_and_period() -> None:
    assert stale_after({"dynamic": {"loop_wait": 10}}) == 12.0
    assert stale_after({}) == 3.0
    assert period(5.0) == 0.2
    assert period(0.4) == pytest.approx(0.1)
    assert period(0.0) == 0.02


def test_a_primary_restarted_in_place_keeps_the_vip_under_a_confirmed_lease() -> None:
    now = 1000.0
    ok, why = may_hold_vip(True, False, None, now, now + 10, 3, False, restarting_in_place=True)
    assert ok and "restarted in place" in why
    # the lease rule still applies, and so does the intent
    assert not may_hold_vip(True, False, None, now, now + 3, 3, False,
                            restarting_in_place=True)[0]
    assert not may_hold_vip(False, False, None, now, now + 10, 3, False,
                            restarting_in_place=True)[0]


# -- the switchover hand-off window (workers/network_inputs.handing_off) -------------------

def test_hand_off_keeps_the_vip_only_before_its_deadline_and_never_on_a_primary() -> None:
    from pgwarden.workers.network_inputs import handing_off

    stopped = {"running": False, "role": None}
    replica = {"running": True, "role": "replica"}
    primary = {"running": True, "role": "primary"}
    assert handing_off(12.0, 10.0, stopped)
    assert handing_off(12.0, 10.0, replica), "a rejoined replica refuses writes itself"
    assert not handing_off(12.0, 10.0, primary), "a running primary follows rule 2 only"
    assert not handing_off(12.0, 12.0, stopped), "the window ends at its deadline"
    assert not handing_off(None, 10.0, stopped)
    assert not handing_off(float("nan"), 10.0, stopped)
    assert not handing_off(True, 0.5, stopped), "a bool is not a deadline"


@pytest.mark.parametrize("pg_intent,pg,vip,expected", [
    ({"role": "primary", "recover": True}, {"state": "crashed"}, True, "restarted in place"),
    ({"role": "none"}, {"operation": {"name": "restart"}, "role": None}, True, "on request"),
    ({"role": "none"}, {"operation": {"name": "restart"}, "role": "replica"}, True, None),
    ({"role": "primary"}, {"running": True, "role": "replica"}, True, "being promoted"),
    ({"role": "primary"}, {"running": True, "role": "replica"}, False, None),
    ({"role": "stopped"}, {"operation": {"name": "stop"}}, True, "stopping cleanly"),
    ({"role": "stopped"}, {"operation": {"name": "stop"}}, False, None),
    ({"role": "primary"}, {"running": True, "role": "primary"}, True, None),
    (None, {"running": True, "role": "replica"}, True, None),
])
def test_transitions_under_the_lock(pg_intent: Any, pg: dict[str, Any], vip: bool,
                                    expected: str | None) -> None:
    from pgwarden.workers.network_inputs import transition_under_lock

    got = transition_under_lock(pg_intent, pg, vip)
    assert (got is None) if expected is None else (got is not None and expected in got)
