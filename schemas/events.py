"""Parse and validate one change event (SPEC section 2) into a `ChangeEvent`.

Every way a record can be bad has a reason code (for counters) and a one-line message
(for the dead-letter row). Checks that need the definitions (known tenant, declared
static list) take them as an argument, so batch and streaming validate alike.
"""

from __future__ import annotations

import json

from rules.values import format_ts, lone_surrogate, parse_timestamp, reject_json_constant
from schemas.records import EVENT_TYPES, ChangeEvent

MAX_RECORD_BYTES = 1 << 20


class InvalidEvent(ValueError):
    """A record that cannot be applied; `code` names the kind of problem."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _text(record, key, required=True):
    value = record.get(key)
    if value is None:
        if required:
            raise InvalidEvent("missing_field", f"missing required field '{key}'")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEvent("wrong_type", f"'{key}' must be a non-empty string, "
                                         f"got {json.dumps(value)[:80]}")
    return value


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
        raise InvalidEvent("not_json", "not JSON: nested too deeply") from None
    except ValueError as err:  # NaN, an integer of more than 4,300 digits
        raise InvalidEvent("not_json", f"not JSON: {err}"[:200]) from None
    if not isinstance(record, dict):
        raise InvalidEvent("not_object", "record is not a JSON object")
    if "\\ud" in payload or "\\uD" in payload:  # only escapes make lone surrogates
        try:
            found = lone_surrogate(record)
        except RecursionError:
            raise InvalidEvent("not_json", "not JSON: nested too deeply") from None
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
        raise InvalidEvent("unknown_type", f"unknown event type {json.dumps(kind)[:60]}")
    stamp = record.get("occurred_at")
    if stamp is None:
        raise InvalidEvent("missing_field", "missing required field 'occurred_at'")
    try:
        occurred_at = parse_timestamp(stamp)
    except ValueError:
        raise InvalidEvent("bad_timestamp", f"'occurred_at' is not an RFC 3339 timestamp: "
                                            f"{json.dumps(stamp)[:60]}") from None
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
