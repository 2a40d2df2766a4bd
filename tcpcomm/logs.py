# -*- test-case-name: tests.test_logs -*-
"""
Structured logs: one JSON object per line per event, for log shippers.

Give twistd the observer factory L{jsonLogger}::

    twistd --logger tcpcomm.logs.jsonLogger -n tcpcomm --port tcp:8000

Every event logged through Twisted's logger -- tcpcomm's, Twisted's own
(start-up lines included), C{print}s and warnings that twistd redirects to
the log -- is written to standard output as one line::

    {"time": "2026-01-01T12:00:00.123Z", "level": "info",
     "event": "disconnected", "message": "127.0.0.1:40000 disconnected: ...",
     "peer": "127.0.0.1:40000", "namespace": "tcpcomm.line.LineFactory",
     "summary": "...", "bytes_in": 6, "bytes_out": 6, "reason": "..."}

(on one line).  C{time} is ISO 8601 in UTC, C{level} Twisted's level
name, C{message} the text the default logger shows, C{peer} the client's
address or C{null}; then its C{namespace} (and C{system}, where Twisted
gives one), and the event's own fields, their names in snake_case,
their values made JSON-safe (bytes decoded, addresses as C{HOST:PORT},
failures as C{{"type", "message", "traceback"}}, other objects as their
class's name, never a C{repr}).  Workers started with C{--workers N} log the
same way, with a C{worker} field (the worker's PID).

C{event} is a short stable name.  tcpcomm's events name themselves:
C{connected}, C{disconnected}, C{refused}, C{idle_timeout}, C{too_slow},
C{line_too_long}, C{bad_frame}, C{handler_error}, C{handler_timeout},
C{shutdown}, ...  Of Twisted's, C{FACTORY starting on PORT} is
C{listening} (with C{factory} and C{port}), C{(TCP Port PORT Closed)}
C{stopped_listening}, C{Starting factory} and C{Stopping factory}
C{factory_starting} and C{factory_stopping}; any other event is named after
the first part of its namespace: C{twisted} (also for Twisted's legacy
C{log.msg}), C{tcpcomm}, C{stdout}, C{stderr}, C{py} (warnings).

twistd ignores C{--logfile} when given C{--logger}, and in daemon mode
standard output is C{/dev/null}: run with C{-n} (under systemd, in a
container) and let the service manager collect standard output.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEvent,
)
from twisted.python.failure import Failure
from twisted.python.reflect import qual

__all__ = [
    "eventAsDict",
    "eventAsJSON",
    "jsonLogObserver",
    "jsonLogger",
    "jsonWorkerLogger",
]

_FIXED = ("time", "level", "event", "message", "peer")

_LEGACY_KEYS = frozenset(
    {"message", "format", "isError", "system", "time", "why", "failure", "printed"}
)
"""
Keys of Twisted's legacy log events, already in C{message} or C{failure}.
"""

_LISTENING = re.compile(r"(?P<factory>\S+) starting on (?P<port>\S+)")
_STOPPED = re.compile(r"\(\S+ Port (?P<port>\S+) Closed\)")
_TWISTED_FORMATS = {
    "Starting factory {factory!r}": "factory_starting",
    "Stopping factory {factory!r}": "factory_stopping",
}
"""
Twisted's events, by their format, that are named as tcpcomm's are.
"""
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_MAX_DEPTH = 4
_LEVELS: dict[object, str] = {level: level.name for level in LogLevel.iterconstants()}


def _snakeCase(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _utcTime(when: object) -> str:
    if not isinstance(when, (int, float)) or not math.isfinite(when):
        when = datetime.now(timezone.utc).timestamp()
    stamp = datetime.fromtimestamp(when, timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _levelName(level: object) -> str:
    try:
        return _LEVELS.get(level, "info")
    except TypeError:  # not hashable
        return "info"


def _failure(failure: Failure) -> dict[str, str]:
    return {
        "type": "-" if failure.type is None else qual(failure.type),
        "message": failure.getErrorMessage(),
        "traceback": failure.getTraceback(),
    }


def _jsonSafe(value: object, depth: int = 0) -> Any:
    """
    C{value} as something C{json.dumps} writes as it is: no object's
    C{repr}, no NaN.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, enum.Enum):
        return value.name
    if type(value).__module__.startswith("constantly"):
        # Twisted's named constants (LogLevel.warn, ...): not Enum members.
        return str(getattr(value, "name", qual(type(value))))
    if isinstance(value, Failure):
        return _failure(value)
    if isinstance(value, BaseException):
        return {"type": qual(type(value)), "message": str(value)}
    if depth >= _MAX_DEPTH:
        return qual(type(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonSafe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonSafe(v, depth + 1) for v in value]
    host, port = getattr(value, "host", None), getattr(value, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if type(value).__str__ is not object.__str__:
        return str(value)
    return qual(type(value))


def _eventName(event: LogEvent, message: str) -> tuple[str, dict[str, str]]:
    """
    The C{event} of an event and the fields its name implies.
    """
    name = event.get("event")
    if isinstance(name, str) and name:
        return name, {}
    format = event.get("log_format")
    if isinstance(format, str) and format in _TWISTED_FORMATS:
        return _TWISTED_FORMATS[format], {}
    namespace = event.get("log_namespace")
    if not isinstance(namespace, str) or namespace == "log_legacy":
        namespace = "twisted"
    if namespace == "twisted":
        for pattern, eventName in (
            (_LISTENING, "listening"),
            (_STOPPED, "stopped_listening"),
        ):
            match = pattern.fullmatch(message)
            if match is not None:
                return eventName, match.groupdict()
    return namespace.split(".")[0], {}


def eventAsDict(
    event: LogEvent, extra: Mapping[str, object] | None = None
) -> dict[str, Any]:
    """
    The object L{jsonLogger} writes for C{event}: C{time}, C{level},
    C{event}, C{message} and C{peer}, then C{extra}, the event's
    namespace, system and failure, and its own fields in snake_case,
    every value JSON-safe.
    """
    message = formatEvent(event)
    level = event.get("log_level")
    name, implied = _eventName(event, message)
    peer = event.get("peer")
    result: dict[str, Any] = {
        "time": _utcTime(event.get("log_time")),
        "level": _levelName(level),
        "event": name,
        "message": message,
        "peer": None if peer is None else _jsonSafe(peer),
    }
    result.update(implied)
    for key, value in (extra or {}).items():
        result.setdefault(key, _jsonSafe(value))
    for key, field in (("log_namespace", "namespace"), ("log_system", "system")):
        value = event.get(key)
        if isinstance(value, str) and value != "-":
            result.setdefault(field, value)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        result["failure"] = _failure(failure)
    legacy = "log_legacy" in event or event.get("log_namespace") == "log_legacy"
    for key, value in event.items():
        if not isinstance(key, str) or key.startswith("log_") or key in _FIXED:
            continue
        if legacy and key in _LEGACY_KEYS:
            continue
        field = _snakeCase(key)
        if field in result:
            field = f"field_{field}"
        try:
            result[field] = _jsonSafe(value)
        except Exception:
            result[field] = qual(type(value))
    return result


def eventAsJSON(event: LogEvent, extra: Mapping[str, object] | None = None) -> str:
    """
    C{event} as one line of JSON (see L{eventAsDict}), without a line
    ending; all ASCII, so any output encoding can take it.  Never raises:
    an event that cannot be converted becomes a C{log_error} object
    saying why.
    """
    try:
        return json.dumps(eventAsDict(event, extra), allow_nan=False)
    except Exception as e:
        return json.dumps(
            {
                "time": _utcTime(None),
                "level": "error",
                "event": "log_error",
                "message": f"Unable to log an event as JSON: {type(e).__name__}: {e}",
                "peer": None,
                **{str(k): str(v) for k, v in (extra or {}).items()},
            }
        )


def jsonLogObserver(
    stream: IO[str], extra: Mapping[str, object] | None = None
) -> ILogObserver:
    """
    An observer writing each event to C{stream} as one line of JSON (see
    L{eventAsJSON}), with C{extra}'s fields added.
    """
    fields = dict(extra or {})
    return FileLogObserver(stream, lambda event: eventAsJSON(event, fields) + "\n")


def jsonLogger() -> ILogObserver:
    """
    The C{twistd --logger} that writes JSON lines to standard output:
    C{twistd --logger tcpcomm.logs.jsonLogger -n tcpcomm ...}.
    """
    return jsonLogObserver(sys.stdout)


def jsonWorkerLogger() -> ILogObserver:
    """
    L{jsonLogger} for a worker process of C{--workers N}: each object has a
    C{worker} field, the worker's PID.
    """
    return jsonLogObserver(sys.stdout, {"worker": os.getpid()})
