"""The event file format: JSON Lines, each line a ScoreRequest in protobuf JSON form plus the
ground truth (``label``, ``campaign``, ``group``, ``segment``); ``context.eventTime`` is
required. Files ending in ``.gz`` are gzip-compressed; ``-`` is stdin/stdout.

Parsing has a fast path for the canonical form the simulator writes (protobuf's own JSON
parser costs ~0.1 ms per event, a third of a replay); anything else — snake_case names, enum
numbers, unexpected types — goes through ``json_format.ParseDict``, which defines the format
and words the errors."""

from __future__ import annotations

import contextlib
import datetime
import gzip
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from ringfence.v1 import risk_pb2 as pb

LABELS = ("benign", "attack")
TRUTH_FIELDS = ("label", "campaign", "group", "segment")


class EventFormatError(ValueError):
    """An input line is not a valid event; ``str()`` reads ``PATH:LINE: what is wrong``."""

    def __init__(self, source: str, line: int, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        super().__init__(f"{source}:{line}: {message}")


@dataclass(frozen=True, slots=True)
class LabelledEvent:
    """One event: the request, its event time (epoch s) and the ground truth ("" = unknown)."""

    line: int
    request: pb.ScoreRequest
    event_time: float
    label: str = ""
    campaign: str = ""
    group: str = ""
    segment: str = ""


@contextlib.contextmanager
def open_text(path: Path | str, mode: str) -> Iterator[IO[str]]:
    """Text I/O on a path, ``-`` (stdin/stdout) or a ``.gz`` file (written with mtime 0, so
    compressed output is as reproducible as plain output)."""
    if str(path) == "-":
        stream = sys.stdin if mode == "r" else sys.stdout
        yield stream
        if mode == "w":
            stream.flush()
        return
    p = Path(path)
    if p.suffix == ".gz":
        raw = p.open(mode + "b")
        try:
            zipped = gzip.GzipFile(filename="", mode=mode + "b", fileobj=raw, mtime=0,
                                   compresslevel=1)
            with io.TextIOWrapper(zipped, encoding="utf-8", newline="\n") as text:
                yield text
        finally:
            raw.close()
    else:
        with p.open(mode, encoding="utf-8", newline="\n") as f:
            yield f


# ScoreRequest fields in their JSON names, by kind (for the fast path).
_TOP_STRINGS = {"accountId": "account_id", "apiKeyId": "api_key_id", "orgId": "org_id",
                "clientIp": "client_ip"}
_FP_STRINGS = {"ja4": "ja4", "ja3": "ja3", "userAgent": "user_agent", "sdkName": "sdk_name",
               "sdkVersion": "sdk_version", "deviceId": "device_id",
               "acceptLanguage": "accept_language"}
_FP_MAPS = {"extraFingerprints": "extra_fingerprints", "attributes": "attributes"}
_CTX_STRINGS = {"endpoint": "endpoint", "model": "model"}
_CTX_UINT32 = {"inputTokens": "input_tokens", "outputTokens": "output_tokens"}
_TASKS = pb.TaskCategory.DESCRIPTOR.values_by_name
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1


class _NotCanonical(Exception):
    """The fast path met something it does not handle; ParseDict takes over."""


_RFC3339_UTC = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z\Z")
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def _timestamp(value: Any) -> Timestamp:
    # Timestamp.FromJsonString goes through strptime (~35 us); the UTC "Z" form the
    # simulator writes is parsed here, every other form by protobuf itself.
    if not isinstance(value, str):
        raise _NotCanonical
    m = _RFC3339_UTC.match(value)
    if m is None:
        ts = Timestamp()
        try:
            ts.FromJsonString(value)
        except ValueError:
            raise _NotCanonical from None
        return ts
    year, month, day, hour, minute, second, frac = m.groups()
    try:  # validates the calendar (month 13, Feb 30, second 60 are rejected)
        moment = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute),
                                   int(second))
    except ValueError:
        raise _NotCanonical from None
    seconds = ((moment.toordinal() - _EPOCH_ORDINAL) * 86400 + moment.hour * 3600
               + moment.minute * 60 + moment.second)
    return Timestamp(seconds=seconds, nanos=int(frac.ljust(9, "0")) if frac else 0)


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _NotCanonical
    return value


def _fast_request(d: dict[str, Any]) -> pb.ScoreRequest:
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in _TOP_STRINGS:
            if not isinstance(value, str):
                raise _NotCanonical
            kwargs[_TOP_STRINGS[key]] = value
        elif key == "forwardedFor":
            kwargs["forwarded_for"] = _string_list(value)
        elif key == "fingerprint":
            kwargs["fingerprint"] = _fast_fingerprint(value)
        elif key == "context":
            kwargs["context"] = _fast_context(value)
        elif key == "accountCreatedAt":
            kwargs["account_created_at"] = _timestamp(value)
        else:
            raise _NotCanonical
    return pb.ScoreRequest(**kwargs)


def _fast_fingerprint(d: Any) -> pb.DeviceFingerprint:
    if not isinstance(d, dict):
        raise _NotCanonical
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in _FP_STRINGS:
            if not isinstance(value, str):
                raise _NotCanonical
            kwargs[_FP_STRINGS[key]] = value
        elif key == "headerNames":
            kwargs["header_names"] = _string_list(value)
        elif key in _FP_MAPS:
            if not isinstance(value, dict) or not all(
                    isinstance(v, str) for v in value.values()):
                raise _NotCanonical
            kwargs[_FP_MAPS[key]] = value
        else:
            raise _NotCanonical
    return pb.DeviceFingerprint(**kwargs)


def _fast_context(d: Any) -> pb.RequestContext:
    if not isinstance(d, dict):
        raise _NotCanonical
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key == "eventTime":
            kwargs["event_time"] = _timestamp(value)
        elif key in _CTX_STRINGS:
            if not isinstance(value, str):
                raise _NotCanonical
            kwargs[_CTX_STRINGS[key]] = value
        elif key in _CTX_UINT32:
            if type(value) is not int or not 0 <= value <= _UINT32_MAX:
                raise _NotCanonical
            kwargs[_CTX_UINT32[key]] = value
        elif key == "taskCategory":
            if not isinstance(value, str) or value not in _TASKS:
                raise _NotCanonical
            kwargs["task_category"] = _TASKS[value].number
        elif key == "contentSignature":
            # proto3 JSON writes 64-bit integers as decimal strings.
            if not isinstance(value, str) or not value.isdigit() or len(value) > 20:
                raise _NotCanonical
            number = int(value)
            if number > _UINT64_MAX:
                raise _NotCanonical
            kwargs["content_signature"] = number
        else:
            raise _NotCanonical
    return pb.RequestContext(**kwargs)


def to_request(d: dict[str, Any]) -> pb.ScoreRequest:
    """The ScoreRequest of one event object (truth fields already removed); raises
    json_format.ParseError for anything protobuf's JSON mapping rejects."""
    try:
        return _fast_request(d)
    except (_NotCanonical, TypeError, ValueError):
        return json_format.ParseDict(d, pb.ScoreRequest())


def parse_event(text: str, line: int, source: str = "<events>") -> LabelledEvent:
    """Parses one line; raises EventFormatError naming the line and what is wrong."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventFormatError(source, line, f"not valid JSON ({exc.msg} at column "
                                             f"{exc.colno})") from None
    if not isinstance(d, dict):
        raise EventFormatError(source, line, "not a JSON object")
    truth: dict[str, str] = {}
    for key in TRUTH_FIELDS:
        value = d.pop(key, "")
        if not isinstance(value, str):
            raise EventFormatError(source, line, f"{key} must be a string")
        truth[key] = value
    if truth["label"] not in ("", *LABELS):
        raise EventFormatError(source, line, f"label must be one of {list(LABELS)} or empty, "
                                             f"not {truth['label']!r}")
    try:
        request = to_request(d)
    except json_format.ParseError as exc:
        raise EventFormatError(source, line, f"not a ScoreRequest: {exc}") from None
    if not request.context.HasField("event_time"):
        raise EventFormatError(source, line, "context.eventTime is required for replay")
    ts = request.context.event_time
    return LabelledEvent(line, request, ts.seconds + ts.nanos / 1e9, **truth)


def read_events(path: Path | str) -> Iterator[LabelledEvent]:
    """Streams the events of a file (blank lines are skipped). Raises EventFormatError for a
    bad line and for a file without events."""
    source = str(path)
    count = 0
    with open_text(path, "r") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            count += 1
            yield parse_event(text, number, source)
    if count == 0:
        raise EventFormatError(source, 0, "no events in the input")
