"""Timestamps and value conversions: round trips and the odd inputs."""

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.values import canon, format_ts, parse_timestamp, to_date_us, to_number


FIRST_US, LAST_US = parse_timestamp("0001-01-01T00:00:00Z"), \
    parse_timestamp("9999-12-31T23:59:59.999999Z")


@settings(max_examples=1000)
@given(st.integers(FIRST_US, LAST_US))
def test_timestamps_round_trip(micros):
    assert parse_timestamp(format_ts(micros)) == micros


def test_timestamps_outside_the_years_1_to_9999_in_utc_are_refused():
    import pytest
    for text in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+00:01"):
        with pytest.raises(ValueError, match="between the years 1 and 9999"):
            parse_timestamp(text)
    assert format_ts(FIRST_US) == "0001-01-01T00:00:00.000000Z"


def test_offsets_and_fractions():
    assert parse_timestamp("2026-05-01T12:00:00+02:00") == \
        parse_timestamp("2026-05-01T10:00:00Z")
    assert parse_timestamp("2026-05-01T10:00:00.1234567Z") % 1_000_000 == 123456
    assert to_date_us("2026-05-01") == parse_timestamp("2026-05-01T00:00:00Z")


def test_numbers_and_keys():
    assert [to_number(v) for v in (1, "2.5", " 3 ", "nan", "inf", True, "", None, [1])] == \
        [1.0, 2.5, 3.0, None, None, None, None, None, None]
    # beyond any float, Python's digit separators: not numbers (and no crash)
    assert [to_number(v) for v in (10 ** 400, "1" * 400 + "0", "1_000", "1e999")] == \
        [None, None, None, None]
    assert [canon(v) for v in ("NY", 5, 5.0, "05", True, "", [], {"B": 1})] == \
        ["ny", "5", "5", "05", "true", None, None, '{"b":1}']
    assert canon(1e15) == canon(10 ** 15) and canon(2.0 ** 53) == canon(2 ** 53)


_DIGITS = st.sampled_from("0123456789") | st.sampled_from("٣९")


@settings(max_examples=1000, deadline=None)
@given(parts=st.tuples(*(st.lists(_DIGITS, min_size=n, max_size=n).map("".join)
                         for n in (4, 2, 2))),
       pad=st.sampled_from(["", " ", "\n"]))
def test_a_calendar_date_is_midnight_utc_of_that_day(parts, pad):
    """YYYY-MM-DD is midnight UTC, days counted exactly as datetime counts them; an
    impossible day, year 0 or digits of another script are not a date."""
    from datetime import datetime, timezone
    text = pad + "-".join(parts) + pad
    try:
        moment = datetime.fromisoformat("-".join(parts)).replace(tzinfo=timezone.utc)
        expected = (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)).days * 86_400_000_000
    except ValueError:
        expected = None
    assert to_date_us(text) == expected


def test_times_past_the_year_9999_print_in_the_same_calendar():
    """A time window can end after the last event time (9999-12-31): its flip, its
    delta and the lead's clock must print, where datetime stops."""
    from datetime import datetime, timedelta

    from schemas.values import _civil_text
    for day in [*range(-719_162, -718_000), *range(-1000, 1000, 7),
                *range(2_931_000, 2_932_897)]:
        moment = datetime(1970, 1, 1) + timedelta(days=day)
        assert _civil_text(day) == f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    assert format_ts(LAST_US + 1) == "10000-01-01T00:00:00.000000Z"
    assert format_ts(2 ** 63 - 1) == "294247-01-10T04:00:54.775807Z"
