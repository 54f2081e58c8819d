"""The shared-state block: one section per writer process, each guarded by a seqlock.

Layout: a file in /dev/shm (shm_open semantics without multiprocessing's resource
tracker, whose helper process and unlink-at-exit would fight our fork model), mapped
MAP_SHARED by the supervisor before it forks, so every worker inherits the mapping.

Each section has a fixed header followed by a bounded payload slot holding one
orjson document. Exactly one process writes a section, so no cross-process lock is
needed: the writer makes `seq` odd, writes, makes it even again. Readers copy the
section and retry while `seq` is odd or changed under them. A writer killed
mid-write leaves `seq` odd forever: readers give up after a bounded spin and report
the section as torn (stale); the restarted writer `claim()`s it, which makes `seq`
even again and bumps the generation.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

import orjson

from pgwarden.core.clock import mono_ns

SECTIONS: tuple[str, ...] = ("supervisor", "lease", "postgres", "api", "watchdog", "network")
PAYLOAD_BYTES = 256 * 1024
READ_SPINS = 2000  # bounded: a dead writer must not hang its readers


class SectionHeader(ctypes.Structure):
    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("heartbeat_ns", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("generation", ctypes.c_uint32),
        ("length", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


HEADER_BYTES = ctypes.sizeof(SectionHeader)
SECTION_BYTES = HEADER_BYTES + PAYLOAD_BYTES
BLOCK_BYTES = SECTION_BYTES * len(SECTIONS)


@dataclass(frozen=True)
class SectionView:
    """A consistent copy of one section, or torn=True when no consistent copy exists."""

    name: str
    pid: int
    generation: int
    heartbeat_ns: int
    data: dict[str, Any]
    torn: bool = False

    def age(self, now_ns: int | None = None) -> float:
        """Seconds since the writer's last heartbeat (inf if it never beat)."""
        if self.heartbeat_ns == 0:
            return float("inf")
        return ((now_ns if now_ns is not None else mono_ns()) - self.heartbeat_ns) / 1e9


def shm_path(scope: str, name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{scope}.{name}")
    return f"/dev/shm/pgwarden.{safe}"


class SharedState:
    """The mapped block. Create once in the supervisor; children inherit it through fork."""

    def __init__(self, mm: mmap.mmap, path: str | None, owner: bool) -> None:
        self._mm = mm
        self.path = path
        self._owner = owner
        self._headers = {
            n: SectionHeader.from_buffer(mm, i * SECTION_BYTES) for i, n in enumerate(SECTIONS)
        }

    @classmethod
    def create(cls, path: str | None = None) -> "SharedState":
        """Create a fresh block. With a path, a leftover file of a crashed agent is replaced."""
        if path is None:
            mm = mmap.mmap(-1, BLOCK_BYTES, flags=mmap.MAP_SHARED)
            return cls(mm, None, owner=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, BLOCK_BYTES)
            mm = mmap.mmap(fd, BLOCK_BYTES, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        return cls(mm, path, owner=True)

    @classmethod
    def attach(cls, path: str) -> "SharedState":
        """Attach read-only-by-convention to a running agent's block (debugging)."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            mm = mmap.mmap(fd, BLOCK_BYTES, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        return cls(mm, path, owner=False)

    def close(self, unlink: bool | None = None) -> None:
        """Release the mapping; the creator also unlinks the file (unless told not to)."""
        self._headers.clear()
        try:
            self._mm.close()
        except BufferError:
            pass  # a view is still alive somewhere; the mapping dies with the process
        if (self._owner if unlink is None else unlink) and self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    # -- writer side ---------------------------------------------------------------

    def claim(self, section: str) -> None:
        """Take over a section as its (new) single writer: heal a torn seq, bump generation."""
        h = self._headers[section]
        if h.seq & 1:
            h.seq += 1
        h.pid = os.getpid()
        h.generation += 1
        h.heartbeat_ns = mono_ns()

    def publish(self, section: str, data: dict[str, Any]) -> None:
        """Replace the section's payload atomically for readers, and beat."""
        blob = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
        if len(blob) > PAYLOAD_BYTES:
            raise ValueError(f"shared state section {section!r} overflow: {len(blob)} bytes")
        h = self._headers[section]
        base = SECTIONS.index(section) * SECTION_BYTES + HEADER_BYTES
        h.seq += 1  # odd: writing
        self._mm[base : base + len(blob)] = blob
        h.length = len(blob)
        h.heartbeat_ns = mono_ns()
        h.seq += 1  # even: consistent

    def beat(self, section: str) -> None:
        """Heartbeat without new data (one aligned 8-byte store, atomic on its own)."""
        self._headers[section].heartbeat_ns = mono_ns()

    # -- reader side ---------------------------------------------------------------

    def read(self, section: str) -> SectionView:
        h = self._headers[section]
        base = SECTIONS.index(section) * SECTION_BYTES + HEADER_BYTES
        for spin in range(READ_SPINS):
            s1 = h.seq
            if s1 & 1:
                if spin > 100:
                    time.sleep(0.00001)
                continue
            length = h.length
            pid, gen, hb = h.pid, h.generation, h.heartbeat_ns
            blob = bytes(self._mm[base : base + min(length, PAYLOAD_BYTES)])
            if h.seq != s1:
                continue
            try:
                data = orjson.loads(blob) if length else {}
            except orjson.JSONDecodeError:
                # a writer killed mid-write whose seq a restarted writer healed (claim)
                # before publishing: the payload is cut, which is the same as torn
                break
            return SectionView(section, pid, gen, hb, data)
        return SectionView(section, h.pid, h.generation, h.heartbeat_ns, {}, torn=True)

    def read_all(self) -> dict[str, SectionView]:
        return {n: self.read(n) for n in SECTIONS}

    def __iter__(self) -> Iterator[str]:
        return iter(SECTIONS)

    # test hook: simulate a writer killed between the two seq increments
    def _begin_write_and_die(self, section: str) -> None:
        self._headers[section].seq += 1
