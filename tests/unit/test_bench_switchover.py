"""The switchover benchmark's arithmetic: the longest gap between acknowledged writes, the
handover steps read from two agents' logs, the candidate's choice, the CLI wiring. No root."""
from __future__ import annotations

import datetime
from typing import Any

from pgwarden.lab.bench_switchover import handover_steps, longest_gap, next_host
from pgwarden.lab.cli_args import parser


def _rec(t: float, outcome: str = "acked", dt: float = 0.005) -> dict[str, Any]:
    return {"t": t, "dt": dt, "outcome": outcome}


def test_longest_gap_counts_acknowledged_writes_only() -> None:
    recs = [_rec(1.0), _rec(1.01), _rec(1.02, "unknown", dt=0.8), _rec(1.9), _rec(1.91)]
    length, start = longest_gap(recs)  # type: ignore[misc]
    assert abs(length - 0.89) < 1e-9 and abs(start - 1.015) < 1e-9
    assert longest_gap([_rec(1.0)]) is None
    assert longest_gap([]) is None


def _line(at: datetime.datetime, text: str) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S,") + f"{at.microsecond // 1000:03d} INFO {text}"


def test_handover_steps_per_host_after_the_call() -> None:
    t0 = datetime.datetime(2026, 12, 2, 12, 0, 0)
    at = lambda s: t0 + datetime.timedelta(seconds=s)  # noqa: E731
    old = [_line(at(-5), "n1 pgwarden.postgres: checkpoint: done in 0.1 s"),  # before: ignored
           _line(at(0.2), "n1 pgwarden.supervisor: switchover to n2: checkpointing before the shutdown"),
           _line(at(0.3), "n1 pgwarden.postgres: checkpoint: done in 0.1 s"),
           _line(at(0.35), "n1 pgwarden.network: VIP 10.0.0.100 removed from eth0: ..."),
           _line(at(0.5), "n1 pgwarden.lease: leader key released")]
    new = [_line(at(0.52), "n2 pgwarden.lease: leader key acquired"),
           _line(at(0.7), "n2 pgwarden.postgres: promoted in 0.150 s"),
           _line(at(0.75), "n2 pgwarden.network: VIP 10.0.0.100 held: running primary with ...")]
    steps = handover_steps({"old": old, "new": new}, t0.timestamp())
    assert steps == {"checkpoint": 0.2, "checkpoint_done": 0.3, "vip_dropped": 0.35,
                     "released": 0.5, "lock_taken": 0.52, "promoted": 0.7, "vip_held": 0.75}


class _Lab:
    def live_db_hosts(self) -> list[str]:
        return ["n3", "n1", "n2"]


def test_next_host_goes_round() -> None:
    assert next_host(_Lab(), "n1") == "n2"  # type: ignore[arg-type]
    assert next_host(_Lab(), "n3") == "n1"  # type: ignore[arg-type]


def test_cli_accepts_switchover() -> None:
    args = parser().parse_args(["bench", "switchover", "--runs", "2", "--ttl", "5"])
    assert (args.kind, args.runs, args.ttl, args.connect_timeout) == ("switchover", 2, 5, 1.0)
