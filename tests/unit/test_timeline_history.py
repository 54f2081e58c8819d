from __future__ import annotations

from pgwarden.postgres.timeline_history import history_key_value, parse_history


def test_parse_history_file() -> None:
    text = "1\t0/5000A00\tno recovery target specified\n\n2\t0/7000060\tbefore 2026\nbad\n"
    assert parse_history(text) == [(1, 0x5000A00, "no recovery target specified"),
                                   (2, 0x7000060, "before 2026")]


def test_history_key_keeps_earlier_leaders_and_stamps_the_newest() -> None:
    previous = [[1, 0x5000A00, "no recovery target specified", "2026-12-01T10:00:00+00:00", "n2"]]
    th = {"rows": [[1, 0x5000A00, "no recovery target specified"], [2, 0x7000060, "x"]],
          "at": "2026-12-02T09:00:00+00:00"}
    assert history_key_value(previous, th, "n3") == [
        [1, 0x5000A00, "no recovery target specified", "2026-12-01T10:00:00+00:00", "n2"],
        [2, 0x7000060, "x", "2026-12-02T09:00:00+00:00", "n3"],
    ]
    assert len(history_key_value(previous, th, "n3", keep=1)) == 1
