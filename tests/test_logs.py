"""
Tests for L{tcpcomm.logs}: events as JSON objects, a server's events over
real sockets, and the real twistd with C{--logger tcpcomm.logs.jsonLogger},
alone and with workers.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
from typing import Any, cast

from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, globalLogPublisher
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpcomm.line import LineFactory
from tcpcomm.logs import eventAsDict, eventAsJSON, jsonLogObserver, jsonWorkerLogger
from tcpcomm.testing import startServer
from tcpcomm.workers import WORKER_LOGGERS
from tests.test_limits import connectFrom
from tests.test_line import waitUntil
from tests.test_plugin import startTwistd, talk, temporaryDirectory
from tests.test_workers import STARTED, isWorker, waitFor

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

JSON_LOGGER = ("--pidfile=", "--logger", "tcpcomm.logs.jsonLogger")


def capture(log: Logger) -> list[LogEvent]:
    """
    Make C{log} send its events to a new list, and return it.
    """
    events: list[LogEvent] = []
    log.observer = cast(ILogObserver, events.append)
    return events


def parseLines(output: str) -> list[dict[str, Any]]:
    """
    Each line of C{output} parsed as JSON; fails on one that is not an
    object.
    """
    objects = []
    for line in output.splitlines():
        parsed = json.loads(line)
        assert isinstance(parsed, dict), line
        objects.append(parsed)
    return objects


class Opaque:
    """
    An object with no C{__str__} of its own.
    """


class Recorder(Protocol):
    """
    A client that keeps what it receives.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True


class EventAsDictTests(SynchronousTestCase):
    """
    L{eventAsDict} and L{eventAsJSON} turn any event into one JSON object.
    """

    def test_fieldsOfATcpcommEvent(self) -> None:
        """
        An event has C{time} (ISO 8601 UTC), C{level}, C{event},
        C{message} (the text format's) and C{peer} first, then its
        namespace and its own fields in snake_case.
        """
        log = Logger(namespace="tcpcomm.test")
        events = capture(log)
        log.warn(
            "{peer} disconnected ({reason})",
            peer="192.0.2.1:5",
            bytesIn=6,
            bytesOut=7,
            reason="gone",
            event="disconnected",
        )
        result = eventAsDict(events[0])
        self.assertEqual(
            list(result)[:5], ["time", "level", "event", "message", "peer"]
        )
        self.assertRegex(result["time"], ISO_UTC)
        self.assertEqual(
            {k: v for k, v in result.items() if k != "time"},
            {
                "level": "warn",
                "event": "disconnected",
                "message": "192.0.2.1:5 disconnected (gone)",
                "peer": "192.0.2.1:5",
                "namespace": "tcpcomm.test",
                "bytes_in": 6,
                "bytes_out": 7,
                "reason": "gone",
            },
        )

    def test_valuesMadeJSONSafe(self) -> None:
        """
        Bytes are decoded, addresses shown as C{HOST:PORT}, Twisted's
        constants by name, other objects by their class's name (never a
        C{repr}), NaN as text, exceptions as type and message.
        """
        from twisted.internet.address import IPv4Address, IPv6Address

        log = Logger(namespace="tcpcomm.test")
        events = capture(log)
        log.info(
            "x",
            raw=b"a\xffb",
            address=IPv4Address("TCP", "10.0.0.1", 80),
            address6=IPv6Address("TCP", "::1", 81),
            opaque=Opaque(),
            level2=LogLevel.error,
            ratio=float("nan"),
            problem=ValueError("bad"),
            nested={"list": [1, (2, b"3")]},
        )
        line = eventAsJSON(events[0])
        self.assertNotIn("object at 0x", line)
        result = json.loads(line)
        self.assertEqual(result["raw"], "a\\xffb")
        self.assertEqual(result["address"], "10.0.0.1:80")
        self.assertEqual(result["address6"], "[::1]:81")
        self.assertEqual(result["opaque"], f"{__name__}.Opaque")
        self.assertEqual(result["level2"], "error")
        self.assertEqual(result["ratio"], "nan")
        self.assertEqual(
            result["problem"], {"type": "builtins.ValueError", "message": "bad"}
        )
        self.assertEqual(result["nested"], {"list": [1, [2, "3"]]})
        self.assertIsNone(result["peer"])

    def test_failure(self) -> None:
        """
        A logged failure is shown as its type, message and traceback.
        """
        log = Logger(namespace="tcpcomm.test")
        events = capture(log)
        try:
            int("x")
        except ValueError:
            log.failure("Handler failed", peer="p", event="handler_error")
        result = json.loads(eventAsJSON(events[0]))
        self.assertEqual(result["level"], "critical")
        self.assertEqual(result["event"], "handler_error")
        self.assertEqual(result["failure"]["type"], "builtins.ValueError")
        self.assertEqual(
            result["failure"]["message"], "invalid literal for int() with base 10: 'x'"
        )
        self.assertIn("Traceback", result["failure"]["traceback"])

    def test_eventsWithoutNames(self) -> None:
        """
        Events that name no C{event} are named after their namespace;
        Twisted's legacy events are C{twisted}, and its C{starting on} and
        C{Port Closed} lines C{listening} and C{stopped_listening}, with the
        port.
        """
        seen: list[LogEvent] = []
        observer = cast(ILogObserver, seen.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        legacyLog.msg("LineFactory starting on 8000")
        legacyLog.msg("(LineFactory Port 8000 Closed)")
        legacyLog.msg("something else", system="x")
        Logger(namespace="twisted.internet.base").info("from Twisted")
        Logger(namespace="stdout").info("printed")
        Logger(namespace="tcpcomm.line.LineFactory").info("unnamed")
        results = [eventAsDict(e) for e in seen]
        self.assertEqual(
            [r["event"] for r in results],
            [
                "listening",
                "stopped_listening",
                "twisted",
                "twisted",
                "stdout",
                "tcpcomm",
            ],
        )
        self.assertEqual(results[0]["port"], "8000")
        self.assertEqual(results[0]["factory"], "LineFactory")
        self.assertEqual(results[2]["message"], "something else")
        self.assertEqual(results[2]["system"], "x")
        self.assertNotIn("is_error", results[2])

    def test_malformedEventsStillLogged(self) -> None:
        """
        An event with a bad format, a bad time, a field whose C{__str__}
        raises or a cycle still becomes one line of JSON, the same event
        named where it could be.
        """

        class Broken:
            def __str__(self) -> str:
                raise RuntimeError("no")

        cycle: list[object] = []
        cycle.append(cycle)
        malformed: list[LogEvent] = [
            {"log_format": "{missing", "log_time": "soon", "event": "e1"},
            {"log_format": "x", "broken": Broken(), "event": "e2"},
            {"log_format": "x", "cycle": cycle, "event": "e3"},
            cast(LogEvent, {"log_format": "x", "log_level": [], 7: "k", "event": "e4"}),
            {},
        ]
        for event in malformed:
            result = json.loads(eventAsJSON(event))
            self.assertRegex(result["time"], ISO_UTC)
            self.assertEqual(result["event"], event.get("event", "twisted"))

    def test_unconvertibleEventBecomesLogError(self) -> None:
        """
        An event that cannot be converted at all becomes a C{log_error}
        object saying why.
        """

        class Hostile(dict[str, object]):
            def items(self) -> Any:
                raise RuntimeError("no items")

        event = cast(LogEvent, Hostile(log_format="x"))
        result = json.loads(eventAsJSON(event, {"worker": 5}))
        self.assertEqual(result["event"], "log_error")
        self.assertIn("no items", result["message"])
        self.assertEqual(result["worker"], "5")


class JSONObserverTests(SynchronousTestCase):
    """
    L{jsonLogObserver} writes one line of JSON per event.
    """

    def test_oneLinePerEvent(self) -> None:
        """
        Each event is one line, ASCII only, with the observer's extra fields
        (a worker's PID for L{jsonWorkerLogger}).
        """
        stream = io.StringIO()
        log = Logger(
            namespace="tcpcomm.test", observer=jsonLogObserver(stream, {"worker": 9})
        )
        log.info("two\nlines \u202e", event="a")
        log.info("{peer} connected", peer="p", event="connected")
        text = stream.getvalue()
        self.assertTrue(text.isascii())
        results = parseLines(text)
        self.assertEqual([r["event"] for r in results], ["a", "connected"])
        self.assertEqual(results[0]["message"], "two\nlines \u202e")
        self.assertEqual({r["worker"] for r in results}, {9})

    def test_workerLoggerNamesWorker(self) -> None:
        """
        L{jsonWorkerLogger} adds C{worker}, this process's PID; a
        supervisor logging with L{jsonLogger} gives it to its workers.
        """
        stream = io.StringIO()
        self.patch(sys, "stdout", stream)
        jsonWorkerLogger()({"log_format": "x", "event": "e"})
        self.assertEqual(json.loads(stream.getvalue())["worker"], os.getpid())
        self.assertEqual(
            WORKER_LOGGERS["tcpcomm.logs.jsonLogger"], "tcpcomm.logs.jsonWorkerLogger"
        )


class NamedEventsTests(SynchronousTestCase):
    """
    tcpcomm's own events carry their C{event} names.
    """

    def test_shutdownNamed(self) -> None:
        """
        A factory asked to shut down with a connection open logs
        C{shutdown} with the count and timeout.
        """
        stream = io.StringIO()
        observer = jsonLogObserver(stream)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        factory = LineFactory()
        connectFrom(factory, "10.0.0.1")
        factory.shutDown(3.0)
        [shutdown] = [
            r for r in parseLines(stream.getvalue()) if r["event"] == "shutdown"
        ]
        self.assertEqual((shutdown["count"], shutdown["timeout"]), (1, 3.0))


class ServerEventsTests(TestCase):
    """
    A server's events over real sockets, as JSON.
    """

    def setUp(self) -> None:
        self.stream = io.StringIO()
        observer = jsonLogObserver(self.stream)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [r for r in parseLines(self.stream.getvalue()) if r["event"] == event]

    async def test_connectionRefusalIdleBadFrame(self) -> None:
        """
        A connection, a refusal, an idle timeout and a bad frame each log
        one object with its C{event}, the client's C{peer} and its fields.
        """
        factory = LineFactory(maxConnections=1, idleTimeout=0.2)
        server = startServer(self, factory)
        first = Recorder()
        await connectProtocol(server.endpoint(), first)
        await waitUntil(lambda: len(self.logged("connected")) == 1)
        assert first.transport is not None
        port = first.transport.getHost().port  # type: ignore[attr-defined]
        peer = f"127.0.0.1:{port}"
        first.transport.write(b"hello\n")
        second = Recorder()
        await connectProtocol(server.endpoint(), second)
        await waitUntil(lambda: second.closed)
        self.assertEqual(b"".join(second.received), b"ERROR too many connections\n")
        await waitUntil(lambda: len(self.logged("idle_timeout")) == 1)
        await waitUntil(lambda: len(self.logged("disconnected")) == 1)
        [connected] = self.logged("connected")
        self.assertEqual(connected["peer"], peer)
        [refused] = self.logged("refused")
        self.assertNotEqual(refused["peer"], peer)
        self.assertEqual(refused["reason"], "too many connections")
        self.assertEqual(refused["level"], "warn")
        [idle] = self.logged("idle_timeout")
        self.assertEqual((idle["peer"], idle["timeout"]), (peer, 0.2))
        [gone] = self.logged("disconnected")
        self.assertEqual(gone["peer"], peer)
        await waitUntil(lambda: first.closed)
        self.assertEqual(
            (gone["bytes_in"], gone["bytes_out"]), (6, len(b"".join(first.received)))
        )
        self.assertIsInstance(gone["reason"], str)

        framed = startServer(self, LineFactory(framing="netstring"))
        garbler = Recorder()
        await connectProtocol(framed.endpoint(), garbler)
        assert garbler.transport is not None
        badPeer = f"127.0.0.1:{garbler.transport.getHost().port}"  # type: ignore[attr-defined]
        garbler.transport.write(b"garbage")
        await waitUntil(lambda: garbler.closed)
        await waitUntil(lambda: len(self.logged("bad_frame")) == 1)
        [bad] = self.logged("bad_frame")
        self.assertEqual(bad["peer"], badPeer)
        self.assertEqual(bad["framing"], "netstring")
        self.assertIn("length", bad["reason"])


class TwistdJSONTests(SynchronousTestCase):
    """
    The real twistd with C{--logger tcpcomm.logs.jsonLogger}.
    """

    def test_onlyJSONLines(self) -> None:
        """
        twistd's own start-up and shut-down lines and the server's events
        are all JSON objects on standard output; nothing goes to standard
        error.
        """
        server, port = startTwistd(
            self, [], temporaryDirectory(self), twistdArgs=JSON_LOGGER
        )
        reply, clientPort = talk(port, b"hello\n")
        self.assertEqual(reply, b"hello\n")
        self.assertEqual(server.terminate(), -signal.SIGTERM)
        self.assertEqual(server.stderr(), "")
        results = parseLines(server.stdout())
        events = [r["event"] for r in results]
        self.assertEqual(events[0], "twisted")
        self.assertIn("starting up", results[0]["message"])
        for name in ("listening", "factory_starting", "connected", "disconnected"):
            self.assertIn(name, events)
        peer = f"127.0.0.1:{clientPort}"
        [gone] = [
            r for r in results if r["event"] == "disconnected" and r["peer"] == peer
        ]
        self.assertEqual((gone["bytes_in"], gone["bytes_out"]), (6, 6))
        self.assertIn("Server Shut Down.", results[-1]["message"])

    def test_workersLogJSON(self) -> None:
        """
        With C{--workers 2}, the supervisor's and both workers' events are
        JSON objects; a worker's carry its PID as C{worker}.
        """
        server, port = startTwistd(
            self, ["--workers", "2"], temporaryDirectory(self), twistdArgs=JSON_LOGGER
        )

        def workerPIDs() -> set[int]:
            return {int(pid) for _, pid in STARTED.findall(server.stdout())}

        def killWorkers() -> None:
            for pid in workerPIDs():
                if isWorker(pid):
                    os.kill(pid, signal.SIGKILL)

        self.addCleanup(killWorkers)

        def ready() -> bool:
            return {
                r.get("worker")
                for r in parseLines(server.stdout())
                if r["event"] == "worker_ready"
            } == workerPIDs() and len(workerPIDs()) == 2

        waitFor(ready, "two workers to be ready")
        reply, clientPort = talk(port, b"hi\n")
        self.assertEqual(reply, b"hi\n")
        peer = f"127.0.0.1:{clientPort}"
        waitFor(
            lambda: any(
                r["event"] == "disconnected" and r["peer"] == peer
                for r in parseLines(server.stdout())
            ),
            "the disconnection to be logged",
        )
        self.assertEqual(server.terminate(), -signal.SIGTERM)
        self.assertEqual(server.stderr(), "")
        results = parseLines(server.stdout())
        [gone] = [
            r for r in results if r["event"] == "disconnected" and r["peer"] == peer
        ]
        self.assertIn(gone["worker"], workerPIDs())
        started = [r for r in results if r["event"] == "worker_started"]
        self.assertEqual(len(started), 2)
        self.assertNotIn("worker", started[0])
        workers = {r["worker"] for r in results if "worker" in r}
        self.assertEqual(workers, workerPIDs())
