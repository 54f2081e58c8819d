"""The shared-state block: consistent reads under concurrent writes, torn sections detected."""
from __future__ import annotations

import os
import signal
import time

import pytest

from pgwarden.core.shm import (
    HEADER_BYTES,
    PAYLOAD_BYTES,
    SECTION_BYTES,
    SECTIONS,
    SharedState,
    shm_path,
)


@pytest.fixture
def state():
    s = SharedState.create(None)
    yield s
    s.close()


def test_publish_and_read(state: SharedState) -> None:
    state.claim("lease")
    state.publish("lease", {"holds_leader": True, "n": 1})
    v = state.read("lease")
    assert v.data == {"holds_leader": True, "n": 1}
    assert v.pid == os.getpid() and v.generation == 1 and not v.torn
    assert v.age() < 1.0


def test_readers_never_see_a_torn_record(state: SharedState) -> None:
    """A forked writer rewrites the section as fast as it can; every read must be whole."""
    state.claim("postgres")
    state.publish("postgres", {"i": 0, "pad": "", "check": 0})
    pid = os.fork()
    if pid == 0:
        try:
            i = 0
            while True:
                i += 1
                # payloads of varying length, so a torn read would break JSON or the check
                state.publish("postgres", {"i": i, "pad": "x" * (i % 2000), "check": -i})
        finally:
            os._exit(0)
    try:
        seen = set()
        deadline = time.monotonic() + 2.0
        reads = 0
        while time.monotonic() < deadline:
            v = state.read("postgres")
            assert not v.torn
            assert v.data["check"] == -v.data["i"]
            assert len(v.data["pad"]) == v.data["i"] % 2000
            seen.add(v.data["i"])
            reads += 1
        assert reads > 1000 and len(seen) > 100  # the writer really was racing us
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_writer_killed_mid_write_leaves_the_section_torn_until_reclaimed(state: SharedState) -> None:
    state.claim("lease")
    state.publish("lease", {"v": 1})
    pid = os.fork()
    if pid == 0:
        state._begin_write_and_die("lease")  # seq odd, then the process vanishes
        os._exit(0)
    os.waitpid(pid, 0)
    t0 = time.monotonic()
    v = state.read("lease")
    assert v.torn and v.data == {}
    assert time.monotonic() - t0 < 1.0  # readers are never hung by a dead writer
    state.claim("lease")  # the restarted writer heals it
    v = state.read("lease")
    assert not v.torn and v.generation == 2 and v.data == {"v": 1}


def test_oversized_payload_is_refused_and_leaves_the_old_value(state: SharedState) -> None:
    state.claim("api")
    state.publish("api", {"ok": True})
    with pytest.raises(ValueError, match="overflow"):
        state.publish("api", {"big": "x" * PAYLOAD_BYTES})
    assert state.read("api").data == {"ok": True}


def test_named_block_is_attachable_and_unlinked_by_its_owner(tmp_path) -> None:
    path = shm_path("unit-test", f"n{os.getpid()}")
    owner = SharedState.create(path)
    try:
        owner.claim("supervisor")
        owner.publish("supervisor", {"state": "primary"})
        other = SharedState.attach(path)
        assert other.read("supervisor").data == {"state": "primary"}
        other.close()
        assert os.path.exists(path)  # a reader's close never unlinks
    finally:
        owner.close()
    assert not os.path.exists(path)


def test_a_cut_payload_reads_as_torn_not_as_an_error(state: SharedState) -> None:
    """A writer killed in the middle of copying its payload, healed by claim() before the
    new writer published: every reader (the supervisor reads all sections each cycle) gets
    a torn view instead of a decode error."""
    state.claim("api")
    state.publish("api", {"failsafe_ping": {"name": "n1", "at": 1.0}, "pad": "x" * 100})
    h = state._headers["api"]
    base = SECTIONS.index("api") * SECTION_BYTES + HEADER_BYTES
    state._mm[base + 5: base + 40] = b"\xff" * 35  # half a new payload over the old one
    state.claim("api")
    v = state.read("api")
    assert v.torn and v.data == {}
    assert h.length > 0
