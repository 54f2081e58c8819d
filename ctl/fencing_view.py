"""The fencing columns of `list --fencing`, from each member's GET /patroni `pgwarden` key.

Pure functions: a member's /patroni body (None when its API did not answer) in, cells out.
Tables (pretty, tsv) get text: seconds with one decimal. json/yaml keep numbers as numbers
and add the per-worker restart counts. A member that did not answer shows `?` everywhere; a
member that answers without a `pgwarden` key (a Patroni agent) has blank cells: it does not
publish those facts.
"""
from __future__ import annotations

from typing import Any

FENCING_COLUMNS = ("Watchdog", "Fed", "Lease", "VIP", "Restarts")
DETAIL_COLUMNS = ("Worker restarts",)  # json/yaml only: a {worker: n} map does not fit a cell
FENCING_ALIGN = {"Fed": "r", "Lease": "r", "Restarts": "r"}
UNKNOWN = "?"
_STRUCTURED = ("json", "yaml", "yml")


def fencing_columns(fmt: str) -> list[str]:
    return list(FENCING_COLUMNS) + (list(DETAIL_COLUMNS) if fmt in _STRUCTURED else [])


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _seconds(value: Any, fmt: str) -> Any:
    """One decimal: a float for json/yaml, text for tables; blank when not known."""
    number = _number(value)
    if number is None:
        return ""
    number = round(number, 1) or 0.0  # never "-0.0"
    return number if fmt in _STRUCTURED else f"{number:.1f}"


def watchdog_text(own: dict[str, Any]) -> str:
    """`off`, `armed (required)`, `disarmed (automatic)`; blank when the mode is not reported."""
    mode = own.get("watchdog_mode")
    if not isinstance(mode, str) or not mode:
        return ""
    if mode == "off":
        return "off"
    return f"{'armed' if own.get('watchdog_armed') is True else 'disarmed'} ({mode})"


def _restarts(value: Any) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


def fencing_values(body: dict[str, Any] | None, fmt: str = "pretty") -> dict[str, Any]:
    """Cells keyed by column name for one member; `body` is its GET /patroni answer or None."""
    columns = fencing_columns(fmt)
    if body is None:
        return {c: UNKNOWN if c in FENCING_COLUMNS else "" for c in columns}
    own = body.get("pgwarden")
    if not isinstance(own, dict):
        return {c: "" for c in columns}
    armed = own.get("watchdog_armed") is True
    restarts = _restarts(own.get("worker_restarts"))
    values = {
        "Watchdog": watchdog_text(own),
        # the time since the last feed means something only while the device is armed
        "Fed": _seconds(own.get("watchdog_since_feed"), fmt) if armed else "",
        "Lease": _seconds(own.get("lease_deadline_in"), fmt),
        "VIP": "held" if own.get("vip_held") is True else "",
        "Restarts": "" if restarts is None else sum(restarts.values()),
        "Worker restarts": "" if restarts is None else restarts,
    }
    return {c: values[c] for c in columns}
