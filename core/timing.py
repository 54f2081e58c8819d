"""Timing rules every process must agree on (one source, so actuators and the brain match)."""
from __future__ import annotations

from pgwarden.core.config_model import Config, DynamicConfig


def safety_margin(cfg: Config, dynamic: DynamicConfig) -> float:
    """Patroni's watchdog.safety_margin; -1 means half the ttl.

    pgwarden also uses it for rule 1 and rule 2 of ARCHITECTURE.md: a primary stops being
    writable, and drops the VIP, at `lease_deadline - safety_margin`.
    """
    m = cfg.watchdog.safety_margin
    return dynamic.ttl / 2 if m == -1 else float(max(m, 0))


def watchdog_timeout(cfg: Config, dynamic: DynamicConfig) -> int:
    """W = ttl - safety_margin (Patroni), at least 1 s, so W <= T - margin (rule 3)."""
    return max(1, int(dynamic.ttl - safety_margin(cfg, dynamic)))
