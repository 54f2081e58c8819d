"""The fencing rules (ARCHITECTURE.md rule 3), row by row."""
from __future__ import annotations

import pytest
from pgwarden.fencing.rules import (
    CAUSE_DEADLINE,
    CAUSE_NO_LEASE,
    CAUSE_POSTGRES,
    CAUSE_SUPERVISOR,
    arming_timeout,
    cause_of,
    heartbeat_max_age,
    may_disarm,
    may_feed,
    poll_interval,
    renew_interval,
    should_arm,
    timeout_problem,
)

NS = 1e-9
W = 25
MAX_AGE = 12.0
FRESH = 0.5  # a heartbeat half a second old


def feed(now: float, deadline: float | None, sup: float = FRESH, pg: float = FRESH,
         timeout: float = W) -> tuple[bool, str]:
    return may_feed(now, timeout, deadline, sup, pg, MAX_AGE)


@pytest.mark.parametrize("now, deadline, sup, pg, ok, cause", [
    # right after a renewal: renewed_at 1000, ttl 30, fed 0.1 s later
    (1000.1, 1030.0, FRESH, FRESH, True, None),
    # exactly at the boundary: now + W == deadline still feeds
    (1005.0, 1030.0, FRESH, FRESH, True, None),
    # one nanosecond later it does not
    (1005.0 + NS, 1030.0, FRESH, FRESH, False, CAUSE_DEADLINE),
    # a renewal seen late (feeding at renewed_at + 6 > safety margin 5)
    (1006.0, 1030.0, FRESH, FRESH, False, CAUSE_DEADLINE),
    # the deadline already passed
    (1031.0, 1030.0, FRESH, FRESH, False, CAUSE_DEADLINE),
    # no lease at all (never renewed, or a torn lease section)
    (1000.0, None, FRESH, FRESH, False, CAUSE_NO_LEASE),
    (1000.0, 0.0, FRESH, FRESH, False, CAUSE_NO_LEASE),
    # the supervisor (the brain) froze while the lease worker kept renewing
    (1000.1, 1030.0, 13.0, FRESH, False, CAUSE_SUPERVISOR),
    (1000.1, 1030.0, MAX_AGE, FRESH, False, CAUSE_SUPERVISOR),  # "fresher than": strict
    (1000.1, 1030.0, MAX_AGE - NS, FRESH, True, None),
    (1000.1, 1030.0, float("inf"), FRESH, False, CAUSE_SUPERVISOR),  # never beat
    # the postgres controller hung
    (1000.1, 1030.0, FRESH, 20.0, False, CAUSE_POSTGRES),
    (1000.1, 1030.0, FRESH, MAX_AGE, False, CAUSE_POSTGRES),
    (1000.1, 1030.0, FRESH, float("inf"), False, CAUSE_POSTGRES),
    # the lease comes first: it is the one that protects the other members
    (1006.0, 1030.0, 20.0, 20.0, False, CAUSE_DEADLINE),
    (1000.1, 1030.0, 20.0, 20.0, False, CAUSE_SUPERVISOR),
])
def test_may_feed(now: float, deadline: float | None, sup: float, pg: float, ok: bool,
                  cause: str | None) -> None:
    got, reason = feed(now, deadline, sup, pg)
    assert got is ok, reason
    if cause is not None:
        assert cause_of(reason) == cause
    assert reason  # always a sentence for the log


def test_boundary_with_nanosecond_times() -> None:
    # the fleet's uptimes: CLOCK_MONOTONIC values around a month, still ns-exact in a float
    renewed_at = 2_600_000.0
    deadline = renewed_at + 30
    assert feed(deadline - W, deadline)[0] is True
    assert feed(deadline - W + NS, deadline)[0] is False


def test_a_feed_never_lets_the_watchdog_outlive_the_lease() -> None:
    # property of the rule: whenever it feeds, the reset it allows is before the deadline
    deadline = 1030.0
    for step in range(40_000):
        now = 995.0 + step * 0.001
        for timeout in (1, 5, 15, 25, 29):
            ok, _ = feed(now, deadline, timeout=timeout)
            assert ok == (now + timeout <= deadline)


def test_the_refusal_reason_says_by_how_much() -> None:
    ok, reason = feed(1006.0, 1030.0)
    assert not ok
    assert reason == ("lease deadline too close: feeding now would let the watchdog run "
                      "1.000 s past the lease deadline")


@pytest.mark.parametrize("intent, mode, paused, armed", [
    ("armed", "automatic", False, True),
    ("armed", "required", False, True),
    ("armed", "off", False, False),
    ("armed", "automatic", True, False),  # Patroni: no watchdog in maintenance mode
    ("armed", "required", True, False),
    ("disarmed", "automatic", False, False),
    ("disarmed", "required", False, False),
    (None, "required", False, False),  # no decision yet
])
def test_should_arm(intent: str | None, mode: str, paused: bool, armed: bool) -> None:
    assert should_arm(intent, mode, paused) is armed


@pytest.mark.parametrize("want, primary, vip, ok", [
    (False, False, False, True),
    (True, False, False, False),  # the decision core still wants it
    (False, True, False, False),  # demotion not finished: PostgreSQL still a primary
    (False, False, True, False),  # the VIP is still up
    (False, None, False, False),  # postgres section stale: unknown counts as primary
    (False, False, None, False),  # network section stale: unknown counts as held
    (False, True, True, False),
])
def test_may_disarm(want: bool, primary: bool | None, vip: bool | None, ok: bool) -> None:
    got, reason = may_disarm(want, primary, vip)
    assert got is ok, reason
    assert reason


@pytest.mark.parametrize("now, deadline, expected", [
    (1000.1, 1030.0, 25),  # a whole W fits before the deadline
    (1005.0, 1030.0, 25),  # exactly
    (1010.5, 1030.0, 19),  # shortened to the whole seconds left
    (1028.5, 1030.0, 1),
    (1029.5, 1030.0, None),  # less than one second: wait for a renewal
    (1031.0, 1030.0, None),
    (1000.0, None, None),
    (1000.0, 0.0, None),
])
def test_arming_timeout(now: float, deadline: float | None, expected: int | None) -> None:
    t = arming_timeout(now, W, deadline)
    assert t == expected
    if t is not None:
        assert may_feed(now, t, deadline, FRESH, FRESH, MAX_AGE)[0]


@pytest.mark.parametrize("effective, ttl, interval, problem", [
    (25, 30, 7.5, None),
    (15, 30, 7.5, None),  # safety_margin -1: ttl // 2
    (29, 30, 7.5, None),  # margin 1 s: exactly FEED_SLACK
    (30, 30, 7.5, "raise watchdog.safety_margin"),  # margin 0: never feedable
    (60, 30, 7.5, "raise watchdog.safety_margin"),  # a driver that keeps its 60 s default
    (7, 30, 7.5, "would reset a healthy primary"),
    (None, 30, 7.5, "does not report its timeout"),
])
def test_timeout_problem(effective: int | None, ttl: float, interval: float,
                         problem: str | None) -> None:
    got = timeout_problem(effective, ttl, interval)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_the_timing_helpers() -> None:
    assert renew_interval(30, 10) == 7.5  # as the lease worker renews
    assert renew_interval(4, 1) == 1
    assert renew_interval(0.4, 1) == 0.2
    assert heartbeat_max_age(10) == 12  # as supervisor/observe.py's stale limit
    assert heartbeat_max_age(0) == 3
    assert poll_interval(25) == 0.2
    assert poll_interval(0.4) == 0.1


def test_a_failsafe_round_counts_as_a_confirmation_for_feeding() -> None:
    from pgwarden.workers.watchdog_worker import confirmed_at

    assert confirmed_at({"renewed_at": 10.0}, 10) == 10.0
    # every member accepted a round sent at 15 (deadline 25 with ttl 10): a newer confirmation
    assert confirmed_at({"renewed_at": 10.0, "failsafe_deadline": 25.0, "ttl": 10}, 30) == 15.0
    assert confirmed_at({"renewed_at": 20.0, "failsafe_deadline": 25.0, "ttl": 10}, 10) == 20.0
    assert confirmed_at({"renewed_at": True, "failsafe_deadline": "x"}, 10) == 0.0


def test_primary_running_from_the_postgres_section() -> None:
    from pgwarden.workers.watchdog_worker import primary_running

    assert primary_running({"running": True, "role": "primary", "pid": 5}) is True
    assert primary_running({"running": True, "role": "replica", "pid": 5}) is False
    assert primary_running({"running": False, "role": None, "pid": None}) is False
    assert primary_running(None) is None
