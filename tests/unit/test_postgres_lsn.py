"""LSN text <-> integer, as PostgreSQL prints them and Patroni publishes them."""
import pytest
from pgwarden.postgres.lsn import format_lsn, parse_lsn, parse_lsn_or_none


@pytest.mark.parametrize(
    "text, value",
    [
        ("0/0", 0),
        ("0/1741570", 0x1741570),
        ("16/B374D848", 0x16B374D848),
        ("16/b374d848", 0x16B374D848),
        ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
        (" 1/0 ", 1 << 32),
    ],
)
def test_parse(text: str, value: int) -> None:
    assert parse_lsn(text) == value


@pytest.mark.parametrize("bad", ["", "/", "1/", "/1", "12345", "G/0", "1/2/3", "123456789/0", "-1/0"])
def test_parse_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_lsn(bad)


def test_none_stays_none() -> None:
    assert parse_lsn_or_none(None) is None
    assert parse_lsn_or_none("0/10") == 16


@pytest.mark.parametrize("value", [0, 1, 0x1741570, 0x16B374D848, 2**64 - 1])
def test_round_trip(value: int) -> None:
    assert parse_lsn(format_lsn(value)) == value


def test_format_matches_postgres_spelling() -> None:
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert format_lsn(0) == "0/0"


def test_format_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        format_lsn(-1)
    with pytest.raises(ValueError):
        format_lsn(2**64)
