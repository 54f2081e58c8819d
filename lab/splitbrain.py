"""The split-brain checker: from the writers' outcome records and the rows found afterwards,
did two hosts ever take writes at once, and did an acknowledged write get lost? Pure: no lab,
no I/O, so the rules are tested row by row (tests/unit/test_splitbrain.py).

Input: `Write` records (lab/acked_writer.py writes them, one JSON line per attempt), the
sequence numbers present on the final primary, optionally those on every surviving host.
All times are CLOCK_MONOTONIC seconds, shared by every lab host, so they compare exactly.

The rules (docs/lab.md says the same):
* A write's commit happened somewhere in [t_send, t_ack].
* A reign is a host's time as primary of one timeline: the acknowledged writes of one
  (host, timeline). A primary's timeline only changes by a promotion, so a host that is primary
  again later is a new reign, and a host that acknowledges again on the same timeline after
  another host acknowledged never stopped being that timeline's primary: one reign. Where the
  timeline is unknown (None), a host's new reign starts only where the acknowledging host
  changes after a quiet gap of at least `reign_gap` seconds (a failover takes seconds; a
  split brain interleaves within milliseconds).
* Overlap (a failure): a write of host B committed for certain inside a reign of host A, i.e.
  after A's first acknowledgement and before A sent its last acknowledged write
  (A.first_ack < b.t_send and b.t_ack < A.last_send). Two hosts interleaving acknowledgements
  always give such a write; concurrent writers whose windows only touch do not (uncertain).
* Handover: consecutive reigns; the gap is the new reign's first acknowledgement minus the old
  one's last. A gap that is not positive is a failure too: the old primary acknowledged after
  the new one had committed.
* Lost: acknowledged, absent from the final primary. Always a failure with synchronous
  replication. With asynchronous replication (`ok(sync=False)`) a lost write is only a warning
  when it was acknowledged no earlier than `async_window` seconds before `fault_time` by a reign
  that had begun by the fault (the old primary's last instants, and what an isolated old
  primary acknowledged after it: both are lost by design without synchronous replication).
* Refused but present (a failure): the client was told "no" (never sent, or answered with an
  error on a healthy connection), yet the row is on the final primary or a surviving host.
* Unknown outcomes (connection lost with the statement in flight) are counted both ways,
  present and absent, and never fail.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Iterable, Mapping, Sequence

ACKED, REFUSED, UNKNOWN = "acked", "refused", "unknown"
OUTCOMES = (ACKED, REFUSED, UNKNOWN)


@dataclass(frozen=True)
class Write:
    """One write attempt as the client saw it."""

    seq: int
    outcome: str
    host: str | None = None  # the host that committed it (acked writes)
    timeline: int | None = None
    t_send: float | None = None  # the INSERT went out (None: never sent)
    t_ack: float | None = None  # the acknowledgement arrived (acked writes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Write:
        """From a line of lab/acked_writer.py's log."""
        if d.get("outcome") not in OUTCOMES:
            raise ValueError(f"write {d.get('seq')}: outcome {d.get('outcome')!r} is not one of "
                             f"{', '.join(OUTCOMES)}")
        tl = d.get("timeline")
        return cls(seq=int(d["seq"]), outcome=str(d["outcome"]), host=d.get("host"),
                   timeline=None if tl is None else int(tl), t_send=_opt_float(d.get("t_send")),
                   t_ack=_opt_float(d.get("t_ack")))


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Reign:
    host: str
    timeline: int | None
    epoch: int | None  # numbering of handovers, only when the timeline is unknown
    first_ack: float
    last_ack: float
    last_send: float
    writes: int
    seqs: tuple[int, ...] = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.host} (timeline {self.timeline if self.timeline is not None else '?'})"


@dataclass(frozen=True)
class Overlap:
    reign: Reign  # the host that was primary ...
    intruder: Reign  # ... while this one committed `seq` for certain
    seq: int
    t_send: float
    t_ack: float

    def __str__(self) -> str:
        return (f"split brain: {self.intruder.name} acknowledged write {self.seq} (sent "
                f"{self.t_send:.3f}, acked {self.t_ack:.3f}) while {self.reign.name} was "
                f"acknowledging writes from {self.reign.first_ack:.3f} to "
                f"{self.reign.last_ack:.3f}")


@dataclass(frozen=True)
class Handover:
    old: Reign
    new: Reign

    @property
    def gap(self) -> float:
        """Seconds from the old reign's last acknowledgement to the new one's first."""
        return self.new.first_ack - self.old.last_ack

    def __str__(self) -> str:
        return f"{self.old.name} -> {self.new.name}: gap {self.gap:.3f} s"


@dataclass(frozen=True)
class Lost:
    write: Write
    tolerated_async: bool  # within the fault window: a warning without synchronous replication

    def __str__(self) -> str:
        w = self.write
        return (f"acknowledged write {w.seq} by {w.host} (timeline {w.timeline}, acked "
                f"{w.t_ack:.3f}) is missing from the final primary")


@dataclass(frozen=True)
class Report:
    reigns: list[Reign]
    handovers: list[Handover]
    overlaps: list[Overlap]
    lost: list[Lost]
    refused_present: dict[int, list[str]]  # seq -> where it was found ("final" or host names)
    unknown_present: list[int]
    unknown_absent: list[int]
    diverged: dict[str, list[int]]  # surviving host -> rows it has and the final primary lacks
    unlogged: list[int]  # rows on the final primary that no record accounts for
    counts: dict[str, int]
    fault_time: float | None

    def failures(self, sync: bool) -> list[str]:
        """One sentence per failure; empty when the run was clean."""
        out = [str(o) for o in self.overlaps]
        out += [f"no positive gap at handover {h}" for h in self.handovers if h.gap <= 0]
        out += _lost_lines([lo for lo in self.lost if sync or not lo.tolerated_async], "")
        out += [f"write {seq} was refused to the client but is present on {', '.join(where)}"
                for seq, where in sorted(self.refused_present.items())]
        return out

    def warnings(self, sync: bool) -> list[str]:
        out = [] if sync else _lost_lines([lo for lo in self.lost if lo.tolerated_async],
                                          " (asynchronous replication, around the fault)")
        out += [f"{host} has rows the final primary lacks (diverged, or not yet rewound): "
                f"{_some(seqs)}" for host, seqs in sorted(self.diverged.items())]
        if self.unlogged:
            out.append(f"{len(self.unlogged)} rows on the final primary match no record "
                       f"(a log cut short, or a writer whose log was not given): "
                       f"{_some(self.unlogged)}")
        return out

    def ok(self, sync: bool) -> bool:
        return not self.failures(sync)

    def describe(self, sync: bool) -> str:
        """A few lines for a test's output or a benchmark note."""
        c = self.counts
        head = (f"writes: {c[ACKED]} acked, {c[REFUSED]} refused, {c[UNKNOWN]} unknown "
                f"({len(self.unknown_present)} of them committed, "
                f"{len(self.unknown_absent)} not); replication "
                f"{'synchronous' if sync else 'asynchronous'}")
        lines = [head]
        lines += [f"reign {r.name}: {r.writes} writes acked {r.first_ack:.3f} .. "
                  f"{r.last_ack:.3f}" for r in self.reigns]
        lines += [f"handover {h}" for h in self.handovers]
        lines += [f"FAIL {f}" for f in self.failures(sync)]
        lines += [f"warn {w}" for w in self.warnings(sync)]
        return "\n".join(lines)


def _lost_lines(lost: list[Lost], why: str) -> list[str]:
    """One sentence per host and timeline (a lost tail can be hundreds of writes)."""
    groups: dict[tuple[str | None, int | None], list[Write]] = {}
    for lo in lost:
        groups.setdefault((lo.write.host, lo.write.timeline), []).append(lo.write)
    out = []
    for (host, tl), ws in groups.items():
        if len(ws) == 1:
            out.append(f"{Lost(ws[0], False)}{why}")
            continue
        acks = [_ack(w) for w in ws]
        out.append(f"{len(ws)} acknowledged writes by {host} (timeline {tl}, acked "
                   f"{min(acks):.3f} .. {max(acks):.3f}) are missing from the final primary"
                   f"{why}: {_some(sorted(w.seq for w in ws))}")
    return out


def _some(seqs: Sequence[int], n: int = 10) -> str:
    s = ", ".join(str(x) for x in seqs[:n])
    return s + (f", ... ({len(seqs)} in all)" if len(seqs) > n else "")


def check(writes: Iterable[Write], final_rows: Iterable[int], *,
          survivors: Mapping[str, Iterable[int]] | None = None,
          fault_time: float | None = None, async_window: float = 1.0,
          reign_gap: float = 1.0) -> Report:
    """Judge one scenario. `final_rows`: the seqs on the final primary; `survivors`: host ->
    the seqs on each other surviving host; `fault_time`: when the fault was injected."""
    ws = list(writes)
    _no_duplicates(ws)
    final = set(final_rows)
    others = {h: set(rows) for h, rows in (survivors or {}).items()}
    reigns, members = _reigns(ws, reign_gap)
    reign_of = {seq: r for r in reigns for seq in r.seqs}
    by_seq = {w.seq: w for w in ws}
    return Report(
        reigns=reigns,
        handovers=[Handover(a, b) for a, b in pairwise(reigns)],
        overlaps=_overlaps(reigns, members),
        lost=[Lost(w, _tolerated(w, reign_of[w.seq], fault_time, async_window))
              for w in ws if w.outcome == ACKED and w.seq not in final],
        refused_present=_refused_present(ws, final, others),
        unknown_present=sorted(w.seq for w in ws if w.outcome == UNKNOWN and w.seq in final),
        unknown_absent=sorted(w.seq for w in ws if w.outcome == UNKNOWN and w.seq not in final),
        diverged={h: sorted(rows - final) for h, rows in others.items() if rows - final},
        unlogged=sorted(final - by_seq.keys()),
        counts={o: sum(1 for w in ws if w.outcome == o) for o in OUTCOMES},
        fault_time=fault_time,
    )


def _no_duplicates(ws: list[Write]) -> None:
    seen: set[int] = set()
    for w in ws:
        if w.seq in seen:
            raise ValueError(f"two records with sequence number {w.seq}: give each writer a "
                             "range of its own (acked_writer --first-seq)")
        seen.add(w.seq)


def _reigns(ws: list[Write], reign_gap: float) -> tuple[list[Reign], list[list[Write]]]:
    """The reigns in order of their first acknowledgement, and each one's writes."""
    acked = sorted((w for w in ws if w.outcome == ACKED), key=lambda w: (_ack(w), w.seq))
    groups: dict[tuple[str, int | None, int | None], list[Write]] = {}
    epoch, prev = 0, None
    for w in acked:
        if w.host is None:
            raise ValueError(f"acknowledged write {w.seq} names no host")
        if prev is not None and w.host != prev.host and _send(w) - _ack(prev) >= reign_gap:
            epoch += 1  # a handover after a quiet gap: a new reign where timelines are unknown
        key = (w.host, w.timeline, None if w.timeline is not None else epoch)
        groups.setdefault(key, []).append(w)
        prev = w
    reigns = [Reign(host=h, timeline=tl, epoch=ep, first_ack=_ack(g[0]), last_ack=_ack(g[-1]),
                    last_send=max(_send(w) for w in g), writes=len(g),
                    seqs=tuple(w.seq for w in g))
              for (h, tl, ep), g in groups.items()]
    order = sorted(range(len(reigns)), key=lambda i: reigns[i].first_ack)
    members = list(groups.values())
    return [reigns[i] for i in order], [members[i] for i in order]


def _ack(w: Write) -> float:
    if w.t_ack is None:
        raise ValueError(f"acknowledged write {w.seq} has no acknowledgement time")
    return w.t_ack


def _send(w: Write) -> float:
    return w.t_send if w.t_send is not None else _ack(w)


def _overlaps(reigns: list[Reign], members: list[list[Write]]) -> list[Overlap]:
    """Per pair of reigns of different hosts, the first write of one committed for certain
    inside the other's reign."""
    out: list[Overlap] = []
    for i, r in enumerate(reigns):
        for j, q in enumerate(reigns):
            if i == j or r.host == q.host:
                continue
            inside = [w for w in members[j]
                      if r.first_ack < _send(w) and _ack(w) < r.last_send]
            if inside and not any({o.reign, o.intruder} == {r, q} for o in out):
                w = inside[0]
                out.append(Overlap(r, q, w.seq, _send(w), _ack(w)))
    return out


def _tolerated(w: Write, reign: Reign, fault_time: float | None, window: float) -> bool:
    if fault_time is None:
        return False
    return _ack(w) >= fault_time - window and reign.first_ack <= fault_time


def _refused_present(ws: list[Write], final: set[int],
                     others: Mapping[str, set[int]]) -> dict[int, list[str]]:
    out = {}
    for w in ws:
        if w.outcome != REFUSED:
            continue
        where = (["final primary"] if w.seq in final else []) + \
            sorted(h for h, rows in others.items() if w.seq in rows)
        if where:
            out[w.seq] = where
    return out
