"""Timestamps and value conversions: round trips and the odd inputs."""

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.values import canon, format_ts, parse_timestamp, to_date_us, to_number


@settings(max_examples=1000)
@given(st.integers(-(10 ** 16), 2 * 10 ** 17))
def test_timestamps_round_trip(micros):
    assert parse_timestamp(format_ts(micros)) == micros


def test_offsets_and_fractions():
    assert parse_timestamp("2026-05-01T12:00:00+02:00") == \
        parse_timestamp("2026-05-01T10:00:00Z")
    assert parse_timestamp("2026-05-01T10:00:00.1234567Z") % 1_000_000 == 123456
    assert to_date_us("2026-05-01") == parse_timestamp("2026-05-01T00:00:00Z")


def test_numbers_and_keys():
    assert [to_number(v) for v in (1, "2.5", " 3 ", "nan", "inf", True, "", None, [1])] == \
        [1.0, 2.5, 3.0, None, None, None, None, None, None]
    assert [canon(v) for v in ("NY", 5, 5.0, "05", True, "", [], {"B": 1})] == \
        ["ny", "5", "5", "05", "true", None, None, '{"b":1}']
