"""The value semantics of the list-definition language, in one place.

Every comparison the engine makes goes through these conversions, so the compiled path,
the reference interpreter and the explainer agree on what "equal", "numeric", "empty"
and "a date" mean. Times are integer microseconds since the Unix epoch throughout.
"""

from __future__ import annotations

import functools
import json
import math
import re
from datetime import date, datetime, timedelta, timezone

DAY_US = 86_400 * 1_000_000
NAN = math.nan

# RFC 3339 date-time: date, 'T' or space, time, optional fraction, mandatory offset.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_DAY = _EPOCH.toordinal()
_FIRST_US = (datetime(1, 1, 1, tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1)
_LAST_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc) - _EPOCH) \
    // timedelta(microseconds=1)
_FIRST_DAY, _LAST_DAY = _FIRST_US // DAY_US, _LAST_US // DAY_US
LAST_US = _LAST_US  # the last instant an event can carry


def canon(value):
    """The comparison key of a field value, or None when the value is empty.

    Strings compare without case; numbers by their shortest decimal form (so 5, 5.0 and
    "5" are equal, but "05" is not 5: identifiers such as zip codes keep their zeros);
    booleans as "true"/"false"; arrays and objects by their canonical JSON text.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.casefold() if value else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (math.inf, -math.inf):
            return str(value).casefold()
        if value.is_integer() and abs(value) <= 2 ** 53:  # exact: 1e15 == 10**15
            return str(int(value))
        return repr(value)
    if isinstance(value, (list, dict)):
        if not value:
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":")).casefold()
    return str(value).casefold()


def to_number(value):
    """The value as a finite float, or None when it is not numeric.

    Numbers and strings holding a decimal number count; booleans, empty values and
    anything else do not, so numeric operators are simply false on them.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            return None
    elif isinstance(value, str):
        text = value.strip()
        if not text or text[-1] not in "0123456789." or "_" in text:
            return None  # rejects "nan", "inf", words and "1_000" cheaply
        try:
            number = float(text)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def parse_timestamp(text):
    """Microseconds since the epoch of an RFC 3339 timestamp; ValueError when it is not one."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError as err:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}") from err
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not _FIRST_US <= micros <= _LAST_US:  # e.g. 9999-12-31T23:00:00-05:00
        raise ValueError(f"not an RFC 3339 timestamp between the years 1 and 9999 in UTC: "
                         f"{text!r}")
    return micros


def to_date_us(value):
    """Microseconds since the epoch of a date field, or None when it is not a date.

    A date field holds an RFC 3339 timestamp or a calendar date (YYYY-MM-DD, taken as
    midnight UTC). Numbers are not dates: epoch seconds and milliseconds cannot be told
    apart, and guessing would put leads in the wrong lists.
    """
    if not isinstance(value, str):
        return None
    return _date_of_text(str(value))


@functools.lru_cache(maxsize=8192)  # dates repeat across leads; parsing one costs ~2 µs
def _date_of_text(value):
    text = value.strip()
    if _DATE_ONLY.match(text):
        if not text.isascii():  # \d matches other scripts' digits; a date has ASCII ones
            return None
        try:
            day = date(int(text[:4]), int(text[5:7]), int(text[8:10]))
        except ValueError:
            return None
        return (day.toordinal() - _EPOCH_DAY) * DAY_US
    try:
        return parse_timestamp(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _day_text(day):
    if _FIRST_DAY <= day <= _LAST_DAY:
        moment = datetime(1970, 1, 1) + timedelta(days=day)
        return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"  # %Y drops zeros
    # past the year 9999 (a time window ending after the last event time there can be)
    return _civil_text(day)


def _civil_text(day):
    """YYYY-MM-DD of a day since the epoch in the proleptic Gregorian calendar by integer
    arithmetic, for days past datetime's range (years of five digits and more)."""
    era, rest = divmod(day + 719_468, 146_097)  # days from 0000-03-01, 400-year eras
    year_of_era = (rest - rest // 1460 + rest // 36_524 - rest // 146_096) // 365
    day_of_year = rest - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153  # from March
    month = month_index + 3 if month_index < 10 else month_index - 9
    year = era * 400 + year_of_era + (month <= 2)
    return f"{year:04d}-{month:02d}-{day_of_year - (153 * month_index + 2) // 5 + 1:02d}"


def format_ts(micros):
    """RFC 3339 text (UTC, microseconds) of a time in microseconds since the epoch."""
    day, rest = divmod(int(micros), DAY_US)
    seconds, micro = divmod(rest, 1_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_day_text(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{micro:06d}Z"


def days_to_us(days):
    """A window length in days as whole microseconds."""
    return int(round(days * DAY_US))


def reject_json_constant(name):
    """`parse_constant` for json.loads: NaN, Infinity and -Infinity are Python's, not
    JSON's, and no table could store them."""
    raise ValueError(f"{name} is not a JSON value")


def lone_surrogate(value, path="the top"):
    """(where, character) of the first string in parsed JSON holding half a UTF-16 pair
    on its own (an escape such as \\ud800: no character, and no table can store it), or
    None. `where` is a path such as `the top.lists[0].list_id`."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            return path, value[err.start]
    elif isinstance(value, dict):
        for key, item in value.items():
            shown = key.encode("utf-8", "replace").decode()
            found = lone_surrogate(key, path) or lone_surrogate(item, f"{path}.{shown}")
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate(item, f"{path}[{i}]")
            if found:
                return found
    return None
