"""WAL positions: PostgreSQL's text form `X/Y` (two hex halves) <-> a 64-bit integer.

Patroni publishes LSNs as integers (xlog.location, wal_position), so lag is a subtraction.
"""
from __future__ import annotations

_MAX_HALF = 0xFFFFFFFF


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> 0x16B374D848. Raises ValueError on anything else."""
    hi, sep, lo = text.strip().partition("/")
    if not sep or not hi or not lo or len(hi) > 8 or len(lo) > 8:
        raise ValueError(f"not an LSN: {text!r}")
    high, low = int(hi, 16), int(lo, 16)  # int() rejects non-hex digits
    if high < 0 or low < 0:
        raise ValueError(f"not an LSN: {text!r}")
    return (high << 32) | low


def parse_lsn_or_none(text: str | None) -> int | None:
    """Like parse_lsn, but NULL (None) stays None: a replica may not have received anything yet."""
    return None if text is None else parse_lsn(text)


def format_lsn(value: int) -> str:
    """0x16B374D848 -> '16/B374D848', the form PostgreSQL prints and accepts."""
    if not 0 <= value <= (_MAX_HALF << 32 | _MAX_HALF):
        raise ValueError(f"LSN out of range: {value}")
    return f"{value >> 32:X}/{value & _MAX_HALF:X}"
