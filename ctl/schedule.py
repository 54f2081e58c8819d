"""`--scheduled` times: ISO 8601, or "now". A time without a zone is taken as local time."""
from __future__ import annotations

import datetime

from pgwarden.ctl.errors import UsageError


def parse_scheduled(text: str | None) -> datetime.datetime | None:
    """None for "now" (or nothing); an aware datetime otherwise."""
    if text is None or text.strip().lower() in ("", "now"):
        return None
    value = text.strip()
    if value.endswith(("z", "Z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"unable to parse scheduled timestamp ({text}): it should be in an unambiguous "
                         "format, e.g. ISO 8601 like 2026-09-24T10:36+02:00") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time zone, as patronictl assumes
    return when
