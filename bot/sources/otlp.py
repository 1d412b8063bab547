"""Turn OTLP log payloads (ExportLogsServiceRequest) into Events, without trusting any of it.

A push source: the OpenTelemetry Collector's `windowseventlog` receiver (or anything speaking
OTLP/HTTP) sends batches of log records; bot.ops.otlp_receiver hands the bytes here. Each
record's body is one Windows event, in one of these forms (../shared/DOMAIN.md section 8):

- the event's XML (`raw: true`), preferred: read by the same parser as a WinRM poll
  (bot.sources.parse.parse_event);
- the receiver's structured map: `provider.name`, `event_id.id` (or a bare number),
  `record_id`, `system_time`, `computer`, and the unnamed <Data> values in `event_data` in one
  of three shapes: `{"data": [{"": v1}, {"": v2}]}` (contrib PR 28587), numbered keys
  `param1`, `param2` (PR 46034, 2026-02, directly or inside `data`), or dropped altogether
  (before late 2023), when the account is read from the rendered `message` if there is one.

Only 1018/1020 from the two Exchange providers are kept; every other record is dropped after
the cheapest test that rules it out (a substring test on XML, two map look-ups on a map).

An event's origin is its <Computer> mapped to a configured server by FQDN or short name (the
caller's `origin_of`: bot.sources.origins.Origins, the rule a collector uses too). An event
from a computer that is not configured is dropped and counted (otlp.unconfigured_origins
"ignore"), or taken under its own short name ("own_name"): never stored under a guess.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.core.model import EVENT_IDS, PROVIDERS, Event
from bot.exchange.remediation import UnsafeValueError, connector_identity
from bot.sources.parse import MAX_RECORD_ID, parse_event, parse_system_time

#: The endpoint every OTLP event is stored under (Event.server): it owns no cursor, and the
#: dedupe key (server, generation, origin, record id) makes a delivery repeated by the
#: sender's retry queue count once.
SERVER = "otlp"
_WANTED_IDS = frozenset(EVENT_IDS)
_WANTED_PROVIDERS = frozenset(PROVIDERS)
_XML_HINT = re.compile(r"MSExchange(?:FrontEnd)?Transport")
#: The two message templates (DOMAIN.md section 1), for a map whose <Data> values were dropped.
_MESSAGES = (
    re.compile(r"The account '(?P<account>.+?)' provided valid credentials, but it does not have "
               r"submit permissions on SMTP Receive connector '(?P<connector>.*?)'; failing "
               r"authentication\.", re.S),
    re.compile(r"The account '(?P<account>.+?)' provided valid credentials, but is not "
               r"authorized to use the server; failing authentication\.", re.S),
)


class PayloadError(ValueError):
    """The request body is not an ExportLogsServiceRequest (the sender must not retry it)."""


@dataclass
class Decoded:
    """What one request held."""

    events: list[Event] = field(default_factory=list)
    records: int = 0                 # log records in the request
    dropped: int = 0                 # not 1018/1020 from the two providers: acknowledged
    malformed: list[str] = field(default_factory=list)   # 1018/1020 records that were unusable
    unknown_origins: dict[str, int] = field(default_factory=dict)  # computer -> events dropped

    @property
    def rejected(self) -> int:
        return len(self.malformed) + sum(self.unknown_origins.values())


def decode(body: bytes, content_type: str, origin_of: Callable[[str], str | None]) -> Decoded:
    """Decode a request body (`application/x-protobuf` or `application/json`) into events.
    Raises PayloadError when the body is not a request at all."""
    if content_type == "application/json":
        bodies = _json_bodies(body)
    else:
        bodies = _protobuf_bodies(body)
    result = Decoded()
    for value in bodies:
        result.records += 1
        _take(value, origin_of, result)
    return result


# --- the two encodings, each reduced to the records' bodies as plain Python values -----------

def _protobuf_bodies(body: bytes) -> Iterator[Any]:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    try:
        request = ExportLogsServiceRequest.FromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise PayloadError(f"not an OTLP ExportLogsServiceRequest ({exc})") from None
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                yield _any_value(record.body) if record.HasField("body") else None


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


def _json_bodies(body: bytes) -> Iterator[Any]:
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"not JSON ({exc})") from None
    if not isinstance(request, dict):
        raise PayloadError("not an OTLP ExportLogsServiceRequest (a JSON object)")
    # OTLP/JSON uses lowerCamelCase names; receivers take the proto's snake_case names too.
    for resource_logs in _list(request, "resourceLogs", "resource_logs"):
        for scope_logs in _list(resource_logs, "scopeLogs", "scope_logs"):
            for record in _list(scope_logs, "logRecords", "log_records"):
                yield _json_any(record.get("body")) if isinstance(record, dict) else None


def _list(parent: Any, camel: str, snake: str) -> list[Any]:
    if not isinstance(parent, dict):
        raise PayloadError(f"not an OTLP ExportLogsServiceRequest ({camel} in a non-object)")
    value = parent.get(camel, parent.get(snake, []))
    if not isinstance(value, list):
        raise PayloadError(f"not an OTLP ExportLogsServiceRequest ({camel} is not a list)")
    return value


_JSON_SCALARS = ("stringValue", "string_value", "boolValue", "bool_value", "doubleValue",
                 "double_value", "bytesValue", "bytes_value")


def _json_any(value: Any) -> Any:
    """An OTLP/JSON AnyValue as a plain value (int64 arrives as a string or a number)."""
    if not isinstance(value, dict):
        return None
    for key in ("intValue", "int_value"):
        if key in value:
            try:
                return int(value[key])
            except (TypeError, ValueError):
                return None
    for key in _JSON_SCALARS:
        if key in value:
            return value[key]
    kvlist = value.get("kvlistValue", value.get("kvlist_value"))
    if isinstance(kvlist, dict):
        return {kv.get("key", ""): _json_any(kv.get("value"))
                for kv in kvlist.get("values", []) if isinstance(kv, dict)}
    array = value.get("arrayValue", value.get("array_value"))
    if isinstance(array, dict):
        return [_json_any(v) for v in array.get("values", [])]
    return None


# --- one record's body --------------------------------------------------------------------------

def _take(value: Any, origin_of: Callable[[str], str | None], result: Decoded) -> None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        _take_xml(value, origin_of, result)
    elif isinstance(value, dict):
        _take_map(value, origin_of, result)
    else:
        result.dropped += 1


def _take_xml(text: str, origin_of: Callable[[str], str | None], result: Decoded) -> None:
    if ("1018" not in text and "1020" not in text) or not _XML_HINT.search(text):
        result.dropped += 1      # the cheap test: not one of ours, nothing parsed
        return
    try:
        event = parse_event(text.strip(), SERVER)
    except ValueError as exc:
        if str(exc).startswith("not a submit-permission event"):
            result.dropped += 1
        else:
            result.malformed.append(str(exc))
        return
    _keep(event, origin_of, result)


def _take_map(body: Mapping[str, Any], origin_of: Callable[[str], str | None],
              result: Decoded) -> None:
    provider = body.get("provider")
    provider_name = provider.get("name") if isinstance(provider, dict) else provider
    event_id = body.get("event_id")
    event_id = event_id.get("id") if isinstance(event_id, dict) else event_id
    if provider_name not in _WANTED_PROVIDERS or _number(event_id) not in _WANTED_IDS:
        result.dropped += 1
        return
    try:
        event = _event_from_map(body, str(provider_name), _number(event_id))
    except ValueError as exc:
        result.malformed.append(str(exc))
        return
    _keep(event, origin_of, result)


def _event_from_map(body: Mapping[str, Any], provider: str, event_id: int | None) -> Event:
    record_id = _number(body.get("record_id"))
    if record_id is None or not 0 < record_id <= MAX_RECORD_ID:
        raise ValueError(f"record_id {str(body.get('record_id'))[:40]!r} is missing or out of "
                         "range")
    time = parse_system_time(str(body.get("system_time") or ""))
    computer = str(body.get("computer") or "").strip()
    values = _data_values(body.get("event_data"))
    if not values:
        values = _from_message(body.get("message"))
    if not values or not values[0].strip():
        raise ValueError(f"event {record_id} has no account name (its <Data> values were "
                         "dropped by the sender and its message is not the known text)")
    connector = values[1] if len(values) > 1 and values[1].strip() else None
    if connector and "\\" not in connector:   # the same SRV\\Name rule as the XML parser's
        try:
            connector = connector_identity(computer, connector)
        except UnsafeValueError:   # kept raw; rendering explains why no command is shown
            pass
    return Event(server=SERVER, record_id=record_id, provider=provider,
                 event_id=event_id or 0, time=time, account=values[0], connector=connector,
                 computer=computer)


def _data_values(event_data: Any) -> list[str]:
    """The unnamed <Data> values in order, from any shape the receiver has produced."""
    if not isinstance(event_data, dict):
        return []
    data = event_data.get("data")
    if isinstance(data, list):       # [{"": v1}, {"": v2}] or [{"param1": v1}, ...]
        values = []
        for item in data:
            if isinstance(item, dict) and len(item) == 1:
                values.append(str(next(iter(item.values())) or ""))
            elif isinstance(item, str):
                values.append(item)
        if values:
            return values
    numbered = sorted((int(k[5:]), v) for k, v in event_data.items()
                      if isinstance(k, str) and k.startswith("param") and k[5:].isdigit())
    return [str(v or "") for _n, v in numbered]


def _from_message(message: Any) -> list[str]:
    if not isinstance(message, str):
        return []
    for pattern in _MESSAGES:
        m = pattern.search(message)
        if m:
            return [m.group(name) for name in ("account", "connector")
                    if name in pattern.groupindex]
    return []


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (str, float)):
        try:
            return int(value)
        except (ValueError, OverflowError):
            return None
    return None


def _keep(event: Event, origin_of: Callable[[str], str | None], result: Decoded) -> None:
    origin = origin_of(event.computer)
    if origin is None:
        name = event.computer[:255] or "(no computer)"
        result.unknown_origins[name] = result.unknown_origins.get(name, 0) + 1
        return
    result.events.append(Event(server=SERVER, record_id=event.record_id,
                               provider=event.provider, event_id=event.event_id,
                               time=event.time, account=event.account,
                               connector=event.connector, computer=event.computer,
                               origin=origin))
