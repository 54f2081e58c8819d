"""The split-brain checker's rules, row by row: overlapping reigns, handover gaps, lost
acknowledged writes (sync and async), refused writes that exist, unknown outcomes. No lab."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgwarden.lab.acked_writer import read_log
from pgwarden.lab.splitbrain import ACKED, REFUSED, UNKNOWN, Write, check


class Client:
    """A sequential writer as acked_writer runs: an attempt every 10 ms, answered 2 ms after
    it was sent. `seq` and `t` can be set apart to play a second writer."""

    def __init__(self, seq: int = 1, t: float = 100.0) -> None:
        self.seq, self.t = seq, t
        self.writes: list[Write] = []

    def _one(self, outcome: str, host: str | None, tl: int | None) -> int:
        acked = outcome == ACKED
        sent = None if outcome == REFUSED else self.t
        self.writes.append(Write(self.seq, outcome, host if acked else None,
                                 tl if acked else None, sent, self.t + 0.002 if acked else None))
        self.seq += 1
        self.t += 0.01
        return self.seq - 1

    def ack(self, host: str, tl: int | None = 1, n: int = 1) -> list[int]:
        return [self._one(ACKED, host, tl) for _ in range(n)]

    def refuse(self, n: int = 1) -> list[int]:
        return [self._one(REFUSED, None, None) for _ in range(n)]

    def unknown(self, n: int = 1) -> list[int]:
        return [self._one(UNKNOWN, None, None) for _ in range(n)]

    def pause(self, seconds: float) -> None:
        self.t += seconds

    def acked(self) -> list[int]:
        return [w.seq for w in self.writes if w.outcome == ACKED]


def failover(gap: float = 5.0) -> tuple[Client, float]:
    """n1 on timeline 1, a fault, refusals and an unknown, n2 on timeline 2 after `gap`."""
    c = Client()
    c.ack("n1", 1, 50)
    fault = c.t
    c.unknown()
    c.refuse(3)
    c.pause(gap)
    c.ack("n2", 2, 50)
    return c, fault


# -- clean runs --------------------------------------------------------------------------


def test_one_host_all_rows_present_is_ok() -> None:
    c = Client()
    c.ack("n1", 1, 20)
    report = check(c.writes, c.acked())
    assert report.ok(sync=True)
    assert [(r.host, r.timeline, r.writes) for r in report.reigns] == [("n1", 1, 20)]
    assert report.handovers == [] and report.overlaps == []


def test_clean_failover_has_two_reigns_and_a_positive_gap() -> None:
    c, fault = failover(gap=5.0)
    report = check(c.writes, c.acked(), fault_time=fault)
    assert report.ok(sync=True), report.failures(sync=True)
    assert [(r.host, r.timeline) for r in report.reigns] == [("n1", 1), ("n2", 2)]
    (h,) = report.handovers
    assert (h.old.host, h.new.host) == ("n1", "n2")
    assert h.gap == pytest.approx(5.0 + 0.05, abs=1e-6)  # 4 failed attempts + the pause
    assert report.counts == {ACKED: 100, REFUSED: 3, UNKNOWN: 1}


def test_a_host_primary_again_later_on_a_new_timeline_is_a_new_reign() -> None:
    c = Client()
    c.ack("n1", 1, 10)
    c.pause(3)
    c.ack("n2", 2, 10)
    c.pause(3)
    c.ack("n1", 3, 10)  # switched back: promoted again, so a new timeline
    report = check(c.writes, c.acked())
    assert report.ok(sync=True), report.failures(sync=True)
    assert [(r.host, r.timeline) for r in report.reigns] == [("n1", 1), ("n2", 2), ("n1", 3)]
    assert [round(h.gap, 3) for h in report.handovers] == [3.01, 3.01]


def test_without_timelines_a_return_after_quiet_gaps_is_a_new_reign() -> None:
    c = Client()
    c.ack("n1", None, 10)
    c.pause(3)
    c.ack("n2", None, 10)
    c.pause(3)
    c.ack("n1", None, 10)
    report = check(c.writes, c.acked())
    assert report.ok(sync=True), report.failures(sync=True)
    assert [(r.host, r.epoch) for r in report.reigns] == [("n1", 0), ("n2", 1), ("n1", 2)]


# -- split brain -------------------------------------------------------------------------


def test_two_hosts_interleaving_acknowledgements_is_an_overlap() -> None:
    c = Client()
    c.ack("n1", 1, 10)
    for _ in range(5):  # the VIP flaps between two writable primaries
        c.ack("n2", 2)
        c.ack("n1", 1)
    report = check(c.writes, c.acked())
    assert not report.ok(sync=True) and not report.ok(sync=False)
    (o,) = report.overlaps
    assert {o.reign.host, o.intruder.host} == {"n1", "n2"}
    assert "split brain" in report.failures(sync=True)[0]


def test_interleaving_without_timelines_is_an_overlap_too() -> None:
    c = Client()
    c.ack("n1", None, 10)
    c.ack("n2", None, 3)
    c.ack("n1", None, 3)
    report = check(c.writes, c.acked())
    assert len(report.overlaps) == 1


def test_one_stray_write_of_the_new_host_inside_the_old_reign_is_an_overlap() -> None:
    c = Client()
    c.ack("n1", 1, 10)
    c.ack("n2", 2)
    c.ack("n1", 1, 10)
    assert len(check(c.writes, c.acked()).overlaps) == 1


def test_isolated_old_primary_acking_local_writes_after_the_new_one_started_is_an_overlap() -> None:
    vip = Client(seq=1, t=100.0)
    vip.ack("n1", 1, 100)  # until 101.0
    vip.refuse(10)
    vip.pause(3.0)
    vip.ack("n2", 2, 100)  # from 104.1
    local = Client(seq=10**9, t=100.005)  # a second writer inside n1, against its own address
    local.ack("n1", 1, 450)  # until 104.5: n1 never stopped
    report = check(vip.writes + local.writes, vip.acked() + local.acked())
    assert report.overlaps and not report.ok(sync=False)


def test_the_old_primary_acking_again_on_its_old_timeline_is_an_overlap() -> None:
    # n1 never stopped being timeline 1's primary while n2 wrote timeline 2: two histories
    c = Client()
    c.ack("n1", 1, 10)
    c.pause(3)
    c.ack("n2", 2, 10)
    c.pause(3)
    c.ack("n1", 1, 10)
    report = check(c.writes, c.acked())
    assert [(o.reign.host, o.intruder.host) for o in report.overlaps] == [("n1", "n2")]


def test_acknowledgements_crossing_at_a_handover_fail_as_no_positive_gap() -> None:
    # two writers: n1 answers its last write after n2 answered its first one. Which committed
    # first is uncertain (no overlap for certain), but the gap is not positive.
    old = [Write(1, ACKED, "n1", 1, 9.0, 9.002), Write(2, ACKED, "n1", 1, 10.000, 10.005)]
    new = [Write(3, ACKED, "n2", 2, 10.001, 10.003), Write(4, ACKED, "n2", 2, 10.01, 10.012)]
    report = check(old + new, [1, 2, 3, 4])
    assert report.overlaps == []
    assert report.handovers[0].gap == pytest.approx(-0.002)
    assert ["no positive gap" in f for f in report.failures(sync=True)] == [True]


# -- lost acknowledged writes ------------------------------------------------------------


def test_a_lost_acked_write_fails_with_synchronous_replication() -> None:
    c, fault = failover()
    lost = c.acked()[10]
    report = check(c.writes, set(c.acked()) - {lost}, fault_time=fault)
    assert [lo.write.seq for lo in report.lost] == [lost]
    assert not report.ok(sync=True)
    assert f"acknowledged write {lost} by n1" in report.failures(sync=True)[0]


def test_async_loses_the_last_instants_before_the_fault_as_a_warning() -> None:
    c, fault = failover()
    tail = c.acked()[45:50]  # n1's last 50 ms
    report = check(c.writes, set(c.acked()) - set(tail), fault_time=fault, async_window=0.5)
    assert report.ok(sync=False), report.failures(sync=False)
    (warning,) = report.warnings(sync=False)
    assert warning.startswith("5 acknowledged writes by n1 (timeline 1, acked ")
    assert warning.endswith(f"(asynchronous replication, around the fault): "
                            f"{', '.join(str(s) for s in tail)}")
    assert not report.ok(sync=True)
    assert len(report.failures(sync=True)) == 1  # one sentence for the five


def test_async_does_not_excuse_a_write_lost_long_before_the_fault() -> None:
    c, fault = failover()
    early = c.acked()[0]  # 0.5 s before the fault
    report = check(c.writes, set(c.acked()) - {early}, fault_time=fault, async_window=0.2)
    assert not report.ok(sync=False)


def test_async_does_not_excuse_a_write_of_the_new_primary_lost() -> None:
    c, fault = failover()
    new_write = c.acked()[60]
    report = check(c.writes, set(c.acked()) - {new_write}, fault_time=fault, async_window=60)
    assert not report.ok(sync=False)


def test_async_excuses_what_an_isolated_old_primary_acknowledged_after_the_fault() -> None:
    vip = Client(seq=1, t=100.0)
    vip.ack("n1", 1, 100)
    fault = vip.t  # the old primary's link goes down
    vip.unknown()
    vip.pause(5.0)
    vip.ack("n2", 2, 10)
    local = Client(seq=10**9, t=100.005)
    local.ack("n1", 1, 150)  # until 101.5: demoted long before n2 took over
    lost = local.acked()[100:]  # after the partition: gone when n1 is rewound
    report = check(vip.writes + local.writes, set(vip.acked() + local.acked()) - set(lost),
                   fault_time=fault, async_window=0.5)
    assert report.overlaps == []
    assert report.ok(sync=False), report.failures(sync=False)
    assert not report.ok(sync=True)


def test_without_a_fault_time_nothing_lost_is_excused() -> None:
    c, _ = failover()
    report = check(c.writes, set(c.acked()[:-1]))
    assert not report.ok(sync=False)


# -- refused and unknown -----------------------------------------------------------------


def test_a_refused_write_present_on_the_final_primary_fails() -> None:
    c, fault = failover()
    refused = [w.seq for w in c.writes if w.outcome == REFUSED]
    report = check(c.writes, c.acked() + refused[:1], fault_time=fault)
    assert list(report.refused_present) == refused[:1]
    assert not report.ok(sync=False)
    assert "refused to the client but is present on final primary" in report.failures(False)[0]


def test_a_refused_write_present_on_a_surviving_host_fails() -> None:
    c, _ = failover()
    refused = next(w.seq for w in c.writes if w.outcome == REFUSED)
    report = check(c.writes, c.acked(), survivors={"n3": set(c.acked()) | {refused}})
    assert report.refused_present == {refused: ["n3"]}
    assert not report.ok(sync=True)


def test_unknown_outcomes_are_reported_both_ways_and_never_fail() -> None:
    c = Client()
    c.ack("n1", 1, 5)
    committed = c.unknown()
    c.pause(2)
    not_committed = c.unknown()
    c.pause(2)
    c.ack("n2", 2, 5)
    report = check(c.writes, c.acked() + committed)
    assert report.unknown_present == committed
    assert report.unknown_absent == not_committed
    assert report.ok(sync=True)
    assert "(1 of them committed, 1 not)" in report.describe(sync=True)


# -- the rest ------------------------------------------------------------------------------


def test_rows_on_a_survivor_missing_on_the_final_primary_are_a_warning() -> None:
    c, _ = failover()
    report = check(c.writes, c.acked(), survivors={"n1": set(c.acked()) | {10**9}})
    assert report.diverged == {"n1": [10**9]}
    assert report.ok(sync=True) and "n1 has rows" in report.warnings(sync=True)[0]
    assert report.unlogged == []


def test_rows_no_record_accounts_for_are_a_warning() -> None:
    c, _ = failover()
    report = check(c.writes, c.acked() + [777777])
    assert report.unlogged == [777777] and report.ok(sync=True)


def test_two_records_with_one_sequence_number_are_refused() -> None:
    with pytest.raises(ValueError, match="range of its own"):
        check([Write(1, REFUSED), Write(1, REFUSED)], [])


def test_describe_lists_reigns_handovers_and_failures() -> None:
    c, fault = failover()
    text = check(c.writes, c.acked()[1:], fault_time=fault).describe(sync=True)
    assert "reign n1 (timeline 1): 50 writes" in text
    assert "handover n1 (timeline 1) -> n2 (timeline 2): gap" in text
    assert "FAIL acknowledged write 1 by n1" in text


def test_read_log_reads_acked_writer_lines(tmp_path: Path) -> None:
    lines = [{"event": "start", "t": 1.0},
             {"seq": 1, "outcome": "acked", "phase": "insert", "host": "n1", "server": "10.0.0.1",
              "timeline": 3, "t_start": 1.0, "t_send": 1.001, "t_ack": 1.003, "t_end": 1.003},
             {"seq": 2, "outcome": "refused", "phase": "connect", "host": None,
              "timeline": None, "t_start": 1.01, "t_send": None, "t_ack": None, "t_end": 1.5}]
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"seq": 3, "outc')
    assert read_log(path, tmp_path / "not-there.jsonl") == [
        Write(1, ACKED, "n1", 3, 1.001, 1.003), Write(2, REFUSED, None, None, None, None)]
    with pytest.raises(ValueError, match="outcome 'failed'"):
        Write.from_dict({"seq": 4, "outcome": "failed"})  # lab/writer.py's log, not this one
