"""Parse and validate one change event (SPEC section 2) into a `ChangeEvent`.

Every way a record can be bad has a reason code (for counters) and a one-line message
(for the dead-letter row). Checks that need the definitions (known tenant, declared
static list) take them as an argument, so batch and streaming validate alike.
"""

from __future__ import annotations

import json
import math

from schemas.values import format_ts, lone_surrogate, parse_timestamp, reject_json_constant
from schemas.records import EVENT_TYPES, ChangeEvent

# What one event may hold. Past any of these the record is a dead letter with its own
# reason, here, once: the engine and the sinks walk values recursively and keep them in
# 64-bit columns, so a record within these limits cannot fail a bundle further on.
MAX_RECORD_BYTES = 1 << 20      # the raw record (SPEC section 2)
MAX_DEPTH = 32                  # arrays and objects nested in one field value
MAX_FIELDS = 1_000              # entries of `fields`
MAX_VALUES = 10_000             # array items and object members nested in `fields`
MAX_NAME_CHARS = 256            # a field name
MAX_ID_CHARS = 256              # event_id, tenant_id, lead_id, tag, list_id, activity kind/ref
MAX_STRING_CHARS = 64 * 1024    # any other string: a value, a key inside a value
MAX_FIELDS_CHARS = 256 * 1024   # `fields` as compact JSON text
MIN_INT, MAX_INT = -(1 << 63), (1 << 63) - 1  # BigQuery's INT64, SQLite's INTEGER, Avro's long

# Per value, compact JSON spends at most this many characters besides its strings' own
# (whose characters take at most 6 each, as \uXXXX): quotes, a colon, a comma, and
# the longest number (-1.2345678901234567e-308 is 24 characters).
_JSON_OVERHEAD = 32


class InvalidEvent(ValueError):
    """A record that cannot be applied; `code` names the kind of problem."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _shown(value, limit=80):
    """A short JSON preview of a value for a message; never walks a nested one (it may
    be as deep as the JSON parser allows, past what json.dumps can recurse into)."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        value = value[:limit]
    elif isinstance(value, int) and not isinstance(value, bool) and \
            not MIN_INT <= value <= MAX_INT:
        return "an integer of %d digits" % len(str(abs(value)))
    return json.dumps(value)[:limit]


def _text(record, key, required=True):
    value = record.get(key)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", f"missing required field '{key}'")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEvent("wrong_type", f"'{key}' must be a non-empty string, "
                                         f"got {_shown(value)}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent("too_long", f"'{key}' is {len(value):,} characters long, over "
                                       f"{MAX_ID_CHARS}")
    if "\x00" in value:  # ids are keys of text columns, and PostgreSQL's text has no NUL
        raise InvalidEvent("wrong_type", f"'{key}' holds a NUL character (\\u0000)")
    return value


def _scalar(value, name):
    """Check a string or number of field `name` (shown in messages) against the limits."""
    kind = type(value)
    if kind is str:
        if len(value) > MAX_STRING_CHARS:
            raise InvalidEvent("too_long", f"field {_shown(name)} holds a string of "
                                           f"{len(value):,} characters, over "
                                           f"{MAX_STRING_CHARS:,}")
    elif kind is int:
        if not MIN_INT <= value <= MAX_INT:
            raise InvalidEvent("bad_number", f"field {_shown(name)} holds "
                                             f"{_shown(value)}, outside the 64-bit range: "
                                             f"send it as a string")
    elif kind is float and not math.isfinite(value):  # 1e400 parses as infinity
        raise InvalidEvent("bad_number", f"field {_shown(name)} holds a number beyond "
                                         f"the range of a double")


def check_fields(fields):
    """InvalidEvent unless the `fields` of an upsert are within the limits above.

    One pass over every value without recursion, so it copes with any depth the JSON
    parser produced.
    """
    if len(fields) > MAX_FIELDS:
        raise InvalidEvent("too_many_fields", f"'fields' has {len(fields):,} entries, over "
                                              f"{MAX_FIELDS:,}")
    chars = 0
    nested = []
    for name, value in fields.items():
        if len(name) > MAX_NAME_CHARS:
            raise InvalidEvent("too_long", f"field name {_shown(name)} is {len(name):,} "
                                           f"characters long, over {MAX_NAME_CHARS}")
        chars += len(name)
        if type(value) is list or type(value) is dict:
            nested.append((value, 1, name))
        else:
            _scalar(value, name)
            if type(value) is str:
                chars += len(value)
    values = 0
    while nested:
        value, depth, name = nested.pop()
        if depth > MAX_DEPTH:
            raise InvalidEvent("too_deep", f"field {_shown(name)} nests arrays or objects "
                                           f"more than {MAX_DEPTH} deep")
        values += len(value)
        if values > MAX_VALUES:
            raise InvalidEvent("too_many_values", f"'fields' holds more than "
                                                  f"{MAX_VALUES:,} nested values")
        if type(value) is dict:
            for key in value:
                if len(key) > MAX_STRING_CHARS:
                    raise InvalidEvent("too_long", f"field {_shown(name)} holds a key of "
                                                   f"{len(key):,} characters, over "
                                                   f"{MAX_STRING_CHARS:,}")
                chars += len(key)
            value = value.values()
        for item in value:
            if type(item) is list or type(item) is dict:
                nested.append((item, depth + 1, name))
            else:
                _scalar(item, name)
                if type(item) is str:
                    chars += len(item)
    # the text is only made when a bound on its length does not settle it
    if 6 * chars + _JSON_OVERHEAD * (len(fields) + values) > MAX_FIELDS_CHARS:
        size = len(json.dumps(fields, ensure_ascii=False, separators=(",", ":")))
        if size > MAX_FIELDS_CHARS:
            raise InvalidEvent("fields_too_large", f"'fields' is {size:,} characters of "
                                                   f"JSON, over {MAX_FIELDS_CHARS:,}")


def decode(payload):
    """The JSON object of a raw record (bytes or text)."""
    if isinstance(payload, (bytes, bytearray)):
        if len(payload) > MAX_RECORD_BYTES:
            raise InvalidEvent("oversized", f"record of {len(payload)} bytes is over 1 MiB")
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidEvent("not_utf8", f"record is not UTF-8: {err.reason} "
                                           f"at byte {err.start}") from None
    elif len(payload) > MAX_RECORD_BYTES // 4 and \
            len(payload.encode("utf-8", "surrogatepass")) > MAX_RECORD_BYTES:
        raise InvalidEvent("oversized", "record is over 1 MiB")
    try:
        record = json.loads(payload, parse_constant=reject_json_constant)
    except json.JSONDecodeError as err:
        raise InvalidEvent("not_json", f"not JSON: {err.msg} at column {err.colno}") from None
    except RecursionError:
        raise InvalidEvent("too_deep", "nested deeper than the JSON parser goes") from None
    except ValueError as err:  # NaN, an integer of more than 4,300 digits
        raise InvalidEvent("not_json", f"not JSON: {err}"[:200]) from None
    if not isinstance(record, dict):
        raise InvalidEvent("not_object", "record is not a JSON object")
    if "\\ud" in payload or "\\uD" in payload:  # only escapes make lone surrogates
        try:
            found = lone_surrogate(record)
        except RecursionError:
            raise InvalidEvent("too_deep", "nested deeper than the JSON parser goes") \
                from None
        if found is not None:
            raise InvalidEvent("not_utf8", f"record holds a lone surrogate escape "
                                           f"(\\u{ord(found[1]):04x})")
    return record


def to_event(record, definitions=None):
    """A validated ChangeEvent from a decoded record; InvalidEvent when it is not one.

    With `definitions`, the tenant must be known and a static-list event must name a
    declared static list of that tenant.
    """
    event_id = _text(record, "event_id")
    tenant_id = _text(record, "tenant_id")
    lead_id = _text(record, "lead_id")
    kind = _text(record, "type")
    if kind not in EVENT_TYPES:
        raise InvalidEvent("unknown_type", f"unknown event type {_shown(kind, 60)}")
    stamp = record.get("occurred_at")
    if stamp is None:
        raise InvalidEvent("missing_field", "missing required field 'occurred_at'")
    try:
        occurred_at = parse_timestamp(stamp)
    except ValueError:
        raise InvalidEvent("bad_timestamp", f"'occurred_at' is not an RFC 3339 timestamp: "
                                            f"{_shown(stamp, 60)}") from None
    tenant = None
    if definitions is not None:
        tenant = definitions.tenant(tenant_id)
        if tenant is None:
            raise InvalidEvent("unknown_tenant", f"unknown tenant {json.dumps(tenant_id)}")
    extra = {}
    if kind == "lead_upserted":
        fields = record.get("fields")
        if not isinstance(fields, dict):
            raise InvalidEvent("wrong_type" if fields is not None else "missing_field",
                               "'fields' must be an object of changed fields"
                               if fields is not None else "missing required field 'fields'")
        check_fields(fields)
        extra["fields"] = fields
    elif kind == "activity":
        activity = record.get("activity")
        if not isinstance(activity, dict):
            raise InvalidEvent("missing_field" if activity is None else "wrong_type",
                               "an activity event needs 'activity': {\"kind\": ..., "
                               "\"ref\": ...}")
        extra["activity_kind"] = _text(activity, "kind")
        extra["activity_ref"] = _text(activity, "ref", required=False)
    elif kind in ("tag_added", "tag_removed"):
        extra["tag"] = _text(record, "tag")
    elif kind in ("static_list_added", "static_list_removed"):
        list_id = _text(record, "list_id")
        if tenant is not None:
            declared = tenant.lists.get(list_id)
            if declared is None or not declared.static:
                raise InvalidEvent("unknown_static_list",
                                   f"list {json.dumps(list_id)} is not a declared static "
                                   f"list of tenant {json.dumps(tenant_id)}")
        extra["list_id"] = list_id
    return ChangeEvent(event_id, tenant_id, lead_id, kind, occurred_at, **extra)


def parse_event(payload, definitions=None):
    """decode + to_event: raw bytes or text in, ChangeEvent out (or InvalidEvent)."""
    return to_event(decode(payload), definitions)


def event_json(event):
    """The JSON record of a ChangeEvent (the inverse of parsing)."""
    record = {"event_id": event.event_id, "tenant_id": event.tenant_id,
              "lead_id": event.lead_id, "type": event.type,
              "occurred_at": format_ts(event.occurred_at)}
    if event.fields is not None:
        record["fields"] = event.fields
    if event.activity_kind is not None:
        record["activity"] = {"kind": event.activity_kind}
        if event.activity_ref is not None:
            record["activity"]["ref"] = event.activity_ref
    if event.tag is not None:
        record["tag"] = event.tag
    if event.list_id is not None:
        record["list_id"] = event.list_id
    return json.dumps(record)
