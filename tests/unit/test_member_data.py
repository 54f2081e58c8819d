"""The member key's URLs: IPv6 literals in brackets, so Patroni's tools can parse them."""
from __future__ import annotations

import pytest

from pgwarden.workers.member_data import url_host


@pytest.mark.parametrize("host,expected", [
    ("10.0.0.1", "10.0.0.1"),
    ("db1.example.org", "db1.example.org"),
    ("::1", "[::1]"),
    ("fd00::5", "[fd00::5]"),
    ("[fd00::5]", "[fd00::5]"),
])
def test_url_host(host: str, expected: str) -> None:
    assert url_host(host) == expected
