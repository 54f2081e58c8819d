"""The HA decision core: one pure function from a Snapshot to a Decision."""
from __future__ import annotations

from pgwarden.supervisor.rules import TRANSITIONS, Transition
from pgwarden.supervisor.snapshot import Decision, Snapshot


def matching_transition(s: Snapshot) -> Transition:
    for t in TRANSITIONS:
        if ("*" in t.from_states or s.memory.state in t.from_states) and t.when(s):
            return t
    raise LookupError(f"no transition from state {s.memory.state!r}")  # the table ends in a catch-all


def decide(s: Snapshot) -> Decision:
    """What to do now, and why, in one sentence. No I/O, no clock: everything is in `s`."""
    if s.memory.state == "stopped":
        return Decision(action="stay_stopped", reason="stopped", memory=s.memory,
                        pg_role="none", exit_code=0 if s.shutdown else None)
    return matching_transition(s).act(s)
