"""Clocks. Deadlines use CLOCK_MONOTONIC only; the wall clock is for display."""
import time


def mono() -> float:
    """Seconds on CLOCK_MONOTONIC, shared by every process of a host."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def mono_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def wall() -> float:
    return time.time()
