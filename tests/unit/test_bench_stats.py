"""The benchmark's arithmetic: reading a growing writer log, first writes after a fault,
missing rows, summaries, the new primary's takeover steps. No root, no lab."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from pgwarden.lab.benchstats import (
    LogTail,
    acked_rows,
    first_ack_after,
    first_ack_after_outage,
    missing,
    summary,
    table,
    takeover_steps,
)


def rec(t: float, outcome: str = "acked", node: str | None = "n1", id_: int | None = 1,
        dt: float = 0.001) -> dict:
    return {"t": t, "dt": dt, "outcome": outcome, "node": node, "id": id_}


def test_log_tail_reads_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    tail = LogTail(path)
    assert tail.poll() == []  # no file yet
    with open(path, "w") as f:
        f.write(json.dumps({"event": "start"}) + "\n" + json.dumps(rec(1.0)) + "\n")
        f.write(json.dumps(rec(2.0))[:10])  # the writer is mid-line
    assert [r["t"] for r in tail.poll()] == [1.0]
    with open(path, "a") as f:
        f.write(json.dumps(rec(2.0))[10:] + "\n")
    assert [r["t"] for r in tail.poll()] == [2.0]
    assert [r["t"] for r in tail.records] == [1.0, 2.0]


def test_first_ack_after_skips_the_old_node_and_failures() -> None:
    recs = [rec(1.0), rec(2.0, "unknown", None, None, dt=2.0), rec(4.0, "failed", None, None),
            rec(4.5, node="n1"), rec(5.0, node="n2", id_=7), rec(6.0, node="n2", id_=8)]
    assert first_ack_after(recs, 1.5)["t"] == 4.5
    assert first_ack_after(recs, 1.5, not_node="n1")["id"] == 7
    assert first_ack_after(recs, 7.0) is None


def test_first_ack_after_outage_ignores_acks_before_the_first_failure() -> None:
    # an orphaned backend acknowledges one more write after the postmaster was killed
    recs = [rec(10.0), rec(10.01), rec(10.02, "unknown", None, None),
            rec(10.05, "failed", None, None, dt=1.0), rec(11.06, id_=9)]
    assert first_ack_after_outage(recs, 10.005)["id"] == 9
    assert first_ack_after_outage(recs[:2], 10.005) is None  # nothing failed yet


def test_missing_rows_are_keyed_by_id_and_node() -> None:
    acked = acked_rows([rec(1, id_=1), rec(2, id_=2), rec(3, "unknown", None, None)])
    assert acked == {(1, "n1"), (2, "n1")}
    assert missing(acked, [[1, "n1"], [2, "n1"], [3, "n2"]]) == []
    # id 2 was handed out again by the new primary: the old row is still lost
    assert missing(acked, [[1, "n1"], [2, "n2"]]) == [(2, "n1")]


def test_summary_and_table() -> None:
    assert summary([3.0, None, 1.0, 2.0]) == {"n": 3, "min": 1.0, "median": 2.0, "max": 3.0}
    assert summary([None]) == {"n": 0, "min": None, "median": None, "max": None}
    lines = table([("crash -> write", summary([1.0, 2.0]), "s"),
                   ("missing", summary([0, 0]), "n"), ("none", summary([]), "s")])
    assert "median" in lines[0]
    assert lines[2].split()[-4:] == ["1.00", "1.50", "2.00", "2"]
    assert lines[3].split()[-4:] == ["0", "0", "0", "2"]
    assert lines[4].split()[-4:] == ["-", "-", "-", "0"]


def test_takeover_steps_from_the_agent_log() -> None:
    t0 = datetime.datetime(2026, 12, 2, 9, 9, 31, 500000).timestamp()

    def line(sec: float, text: str) -> str:
        t = datetime.datetime.fromtimestamp(t0 + sec)
        return f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d} INFO n3 {text}"

    lines = [line(-5, "pgwarden.lease: leader key acquired"),  # an earlier takeover
             line(2.6, "pgwarden.supervisor: the cluster has no leader; giving peers a moment"),
             line(3.3, "pgwarden.lease: leader key acquired"),
             line(3.32, "pgwarden.postgres: promote: starting"),
             line(3.35, "pgwarden.postgres: promoted in 0.034 s"),
             line(3.6, "pgwarden.network: VIP 10.1.2.100 held: running primary with a lease"),
             "not a log line"]
    steps = takeover_steps(lines, t0)
    assert steps == {"leader_gone": 2.6, "lock_taken": 3.3, "promote_start": 3.32,
                     "promoted": 3.35, "vip_held": 3.6}
