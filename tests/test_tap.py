"""
Tests for L{tcpcomm.tap}, in process: option parsing on its own and as
twistd's subcommand, the service L{tcpcomm.tap.makeService} builds (serving
real clients on 127.0.0.1), and the plugin as twistd loads it.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, IServiceMaker, MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from tcpcomm.client import ConnectionFailed, exchange
from tcpcomm.connection import IDLE_SWEEPS
from tcpcomm.echo import EchoFactory
from tcpcomm.line import LineFactory, echoLine
from tcpcomm.tap import (
    MODE_OPTIONS,
    PROTOCOLS,
    Options,
    loadHandler,
    makeFactory,
    makeService,
    upstreamIsOwnPort,
)
from tests.test_limits import connectFrom
from tests.test_plugin import Child, runToEnd, temporaryDirectory

SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""
The checkout these tests belong to.
"""

LOOPBACK_PORT = "tcp:0:interface=127.0.0.1"
"""
An ephemeral port on 127.0.0.1, as C{--port} takes it.
"""


def shout(line: bytes) -> bytes:
    """
    A line handler for C{--handler tests.test_tap:shout}: upper-case the line.
    """
    return line.upper()


class Namespace:
    """
    A dotted path for C{--handler MODULE:Class.attribute}.
    """

    notCallable = 42

    @staticmethod
    def whisper(line: bytes) -> bytes:
        """
        Lower-case the line.
        """
        return line.lower()


def parse(testCase: SynchronousTestCase, args: Sequence[str]) -> Options:
    """
    Parse C{args} with a fresh L{Options}, undoing afterwards the change
    C{--handler} makes to C{sys.path} (it adds the current directory).
    """
    testCase.addCleanup(sys.path.__setitem__, slice(None), sys.path[:])
    options = Options()
    options.parseOptions(list(args))
    return options


def usageError(testCase: SynchronousTestCase, args: Sequence[str]) -> str:
    """
    Parse C{args} with a fresh L{Options}, assert that it raises
    L{usage.UsageError}, and return the error's message.
    """
    testCase.addCleanup(sys.path.__setitem__, slice(None), sys.path[:])
    error = testCase.assertRaises(usage.UsageError, Options().parseOptions, list(args))
    return str(error)


def subcommandError(testCase: SynchronousTestCase, args: Sequence[str]) -> str:
    """
    Parse C{["tcpcomm", *args]} as twistd does, assert that it raises
    L{SystemExit}, and return the exit message.
    """
    testCase.addCleanup(sys.path.__setitem__, slice(None), sys.path[:])
    error = testCase.assertRaises(
        SystemExit, ServerOptions().parseOptions, ["tcpcomm", *args]
    )
    testCase.assertIsInstance(error.code, str)
    return str(error.code)


@implementer(IStreamServerEndpoint)
class RecordingEndpoint:
    """
    Wrap a server endpoint, remembering every port it listens on.

    L{StreamServerEndpointService.endpoint} is a documented attribute, so
    wrapping it reads the port a service bound without reaching into the
    service's private state.
    """

    def __init__(self, wrapped: IStreamServerEndpoint) -> None:
        self.wrapped = wrapped
        self.ports: list[IListeningPort] = []

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen with the wrapped endpoint; remember the port.
        """

        def record(port: IListeningPort) -> IListeningPort:
            self.ports.append(port)
            return port

        d: Deferred[IListeningPort] = self.wrapped.listen(factory)
        return d.addCallback(record)


def endpointServices(service: IService) -> list[StreamServerEndpointService]:
    """
    The children of C{service}, asserting each is an endpoint service.
    """
    assert isinstance(service, MultiService), service
    children = list(service)
    for child in children:
        assert isinstance(child, StreamServerEndpointService), child
    return children


def startRecorded(testCase: SynchronousTestCase, service: IService) -> list[int]:
    """
    Start C{service} as twistd does (privileged start, then start), with
    every child's endpoint wrapped in a L{RecordingEndpoint}, and stop it at
    C{testCase}'s clean-up.

    If starting fails, the ports bound before the failure are closed at
    clean-up and the exception propagates.

    @return: The port numbers bound, in the children's order.
    """
    recorders: list[RecordingEndpoint] = []
    for child in endpointServices(service):
        recorder = RecordingEndpoint(child.endpoint)
        child.endpoint = recorder
        recorders.append(recorder)

    def closeRecorded() -> Deferred[Any]:
        return DeferredList(
            [maybeDeferred(p.stopListening) for r in recorders for p in r.ports],
            fireOnOneErrback=True,
        )

    try:
        service.privilegedStartService()
    except BaseException:
        testCase.addCleanup(closeRecorded)
        raise
    service.startService()
    testCase.addCleanup(service.stopService)
    numbers = []
    for recorder in recorders:
        [port] = recorder.ports
        numbers.append(port.getHost().port)  # type: ignore[attr-defined]
    return numbers


def loopback(port: int) -> TCP4ClientEndpoint:
    """
    A client endpoint for C{port} on 127.0.0.1.
    """
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port)


class OptionsTests(SynchronousTestCase):
    """
    L{Options} parsed on its own.
    """

    def test_defaults(self) -> None:
        """
        With no arguments: port 8000 with tcpcomm's backlog, line mode, LF
        replies, 65536-byte lines, no handler.
        """
        options = parse(self, [])
        self.assertEqual(options["ports"], ["tcp:8000:backlog=1024"])
        self.assertEqual(options["protocol"], "line")
        self.assertEqual(options["delimiter"], "lf")
        self.assertEqual(options["max-line-length"], 65536)
        self.assertIsNone(options["handler"])

    def test_portRepeatableAndNormalized(self) -> None:
        """
        C{-p}/C{--port} may be repeated; a bare number becomes C{tcp:N} and
        TCP endpoints without a backlog get C{backlog=1024}, in order.
        """
        options = parse(
            self,
            ["-p", "8001", "--port", r"tcp6:8002:interface=\:\:1", "-p", "8003"],
        )
        self.assertEqual(
            options["ports"],
            [
                "tcp:8001:backlog=1024",
                r"tcp6:8002:interface=\:\:1:backlog=1024",
                "tcp:8003:backlog=1024",
            ],
        )

    def test_explicitBacklogKept(self) -> None:
        """
        A port that names its own backlog keeps it.
        """
        options = parse(self, ["-p", "tcp:8001:backlog=7"])
        self.assertEqual(options["ports"], ["tcp:8001:backlog=7"])

    def test_protocolEcho(self) -> None:
        """
        C{--protocol echo} selects echo mode.
        """
        self.assertEqual(parse(self, ["--protocol", "echo"])["protocol"], "echo")

    def test_delimiterCrlf(self) -> None:
        """
        C{--delimiter crlf} is accepted.
        """
        self.assertEqual(parse(self, ["--delimiter", "crlf"])["delimiter"], "crlf")

    def test_maxLineLengthIsInt(self) -> None:
        """
        C{--max-line-length} is converted to an C{int}.
        """
        self.assertEqual(
            parse(self, ["--max-line-length", "10"])["max-line-length"], 10
        )

    def test_unknownProtocol(self) -> None:
        """
        An unknown protocol is refused with a message naming it and the
        choices.
        """
        message = usageError(self, ["--protocol", "foo"])
        self.assertEqual(
            message, "unknown protocol 'foo': choose one of line, echo, chat, relay"
        )

    def test_unknownDelimiter(self) -> None:
        """
        An unknown delimiter is refused with a message naming it and the
        choices.
        """
        message = usageError(self, ["--delimiter", "cr"])
        self.assertEqual(message, "unknown delimiter 'cr': choose lf or crlf")

    def test_maxLineLengthZero(self) -> None:
        """
        C{--max-line-length 0} is refused, saying what is expected.
        """
        message = usageError(self, ["--max-line-length", "0"])
        self.assertIn("from 1 to", message)
        self.assertIn("'0'", message)

    def test_maxLineLengthNotANumber(self) -> None:
        """
        C{--max-line-length abc} is refused, naming the value.
        """
        message = usageError(self, ["--max-line-length", "abc"])
        self.assertIn("from 1 to", message)
        self.assertIn("'abc'", message)

    def test_unknownEndpointType(self) -> None:
        """
        An endpoint of an unknown type is refused, naming it.
        """
        message = usageError(self, ["-p", "bogus:1"])
        self.assertIn("bad endpoint", message)
        self.assertIn("bogus", message)

    def test_unknownEndpointParameter(self) -> None:
        """
        An endpoint parameter Twisted does not know is named in words, not
        as the private parser function's complaint.
        """
        message = usageError(self, ["-p", "tcp:8000:bogus=1"])
        self.assertIn("'tcp:8000:bogus=1': unknown parameter 'bogus'", message)
        self.assertNotIn("_parse", message)

    def test_unescapedColonInEndpoint(self) -> None:
        """
        An IPv6 interface whose colons are not escaped (so that Twisted's
        parser sees an argument twice) is refused in words that show the
        escape, not as the private parser function's complaint.
        """
        message = usageError(self, ["-p", "tcp6:8000:interface=::1"])
        self.assertIn(
            "'tcp6:8000:interface=::1': interface given twice, or a value holds"
            " a ':' that is not escaped (an IPv6 address: interface=\\:\\:1)",
            message,
        )
        self.assertNotIn("_parse", message)

    def test_malformedEndpointPort(self) -> None:
        """
        A TCP endpoint whose port is not a number is refused, naming it.
        """
        message = usageError(self, ["-p", "tcp:abc"])
        self.assertIn("bad endpoint 'tcp:abc'", message)
        self.assertNotIn("backlog", message)

    def test_emptyPort(self) -> None:
        """
        An empty C{--port} is refused, saying it is empty.
        """
        message = usageError(self, ["--port", ""])
        self.assertEqual(message, "--port: an endpoint description cannot be empty")

    def test_handlerWithoutColon(self) -> None:
        """
        A handler not of the form C{MODULE:CALLABLE} is refused, naming the
        expected form.
        """
        message = usageError(self, ["--handler", "nocolon"])
        self.assertIn("MODULE:CALLABLE", message)
        self.assertIn("'nocolon'", message)

    def test_handlerUnimportable(self) -> None:
        """
        A handler whose module cannot be imported is refused, naming it and
        the import error.
        """
        message = usageError(self, ["--handler", "no.such.module:f"])
        self.assertIn("'no.such.module:f'", message)
        self.assertIn("ModuleNotFoundError", message)

    def test_handlerMissingAttribute(self) -> None:
        """
        A handler naming a missing attribute of a real module is refused,
        naming it.
        """
        message = usageError(self, ["--handler", "tests.test_tap:noSuchThing"])
        self.assertIn("'tests.test_tap:noSuchThing'", message)
        self.assertIn("AttributeError", message)

    def test_handlerNotCallable(self) -> None:
        """
        A handler naming something that is not callable is refused.
        """
        self.assertEqual(
            usageError(self, ["--handler", "os:sep"]),
            "handler 'os:sep' is not callable",
        )

    def test_relayNeedsUpstream(self) -> None:
        """
        Relay mode without C{--upstream} is refused, saying what is missing.
        """
        message = usageError(self, ["--protocol", "relay"])
        self.assertEqual(message, "--protocol relay needs --upstream HOST:PORT")

    def test_upstreamOnlyForRelay(self) -> None:
        """
        C{--upstream} and C{--tag} with another protocol are refused.
        """
        for args in (["--upstream", "localhost:9"], ["--tag"]):
            message = usageError(self, args)
            self.assertEqual(
                message, f"{args[0]} applies to --protocol relay only, not line"
            )

    def test_badUpstream(self) -> None:
        """
        An upstream that is no endpoint is refused, naming it.
        """
        message = usageError(self, ["--protocol", "relay", "--upstream", "bogus:x"])
        self.assertIn("--upstream: bad endpoint 'bogus:x'", message)

    def test_handlerWithEcho(self) -> None:
        """
        C{--handler} with C{--protocol echo} is refused.
        """
        message = usageError(
            self, ["--protocol", "echo", "--handler", "tests.test_tap:shout"]
        )
        self.assertIn("--handler", message)
        self.assertIn("line", message)

    def test_handlerLoaded(self) -> None:
        """
        C{--handler tests.test_tap:shout} loads this module's L{shout}.
        """
        options = parse(self, ["--handler", "tests.test_tap:shout"])
        self.assertIs(options["handlerObject"], shout)
        self.assertIs(makeFactory(options).handler, shout)  # type: ignore[attr-defined]

    def test_handlerDottedPath(self) -> None:
        """
        The callable may be a dotted path inside the module.
        """
        options = parse(self, ["--handler", "tests.test_tap:Namespace.whisper"])
        self.assertIs(options["handlerObject"], Namespace.whisper)

    def test_handlerDottedPathNotCallable(self) -> None:
        """
        A dotted path ending at something not callable is refused.
        """
        spec = "tests.test_tap:Namespace.notCallable"
        message = usageError(self, ["--handler", spec])
        self.assertIn("not callable", message)

    def test_errorsAreOneLine(self) -> None:
        """
        Every mistake above is reported in a single line.
        """
        mistakes = [
            ["--protocol", "foo"],
            ["--delimiter", "cr"],
            ["--max-line-length", "0"],
            ["--max-line-length", "abc"],
            ["-p", "bogus:1"],
            ["-p", "tcp:abc"],
            ["--port", ""],
            ["--handler", "nocolon"],
            ["--handler", "no.such.module:f"],
            ["--handler", "os:sep"],
            ["--protocol", "echo", "--handler", "tests.test_tap:shout"],
        ]
        for args in mistakes:
            message = usageError(self, args)
            self.assertTrue(message, args)
            self.assertNotIn("\n", message, args)


class SubcommandTests(SynchronousTestCase):
    """
    L{Options} parsed as the C{tcpcomm} subcommand of twistd's
    L{ServerOptions}.
    """

    def test_mistakeIsOneLineSystemExit(self) -> None:
        """
        A mistake raises L{SystemExit} with one line starting
        C{twistd tcpcomm: error:} and saying what is wrong.
        """
        message = subcommandError(self, ["--protocol", "foo"])
        self.assertEqual(
            message,
            "twistd tcpcomm: error: unknown protocol 'foo':"
            " choose one of line, echo, chat, relay",
        )

    def test_everyMistakeIsOneLine(self) -> None:
        """
        Unknown options, missing arguments, bad values, endpoints and
        handlers all end in one C{twistd tcpcomm: error:} line.
        """
        mistakes = [
            ["--bogus"],
            ["-p"],
            ["--delimiter", "cr"],
            ["--max-line-length", "0"],
            ["-p", "bogus:1"],
            ["--port", ""],
            ["--handler", "no.such.module:f"],
        ]
        for args in mistakes:
            message = subcommandError(self, args)
            self.assertTrue(message.startswith("twistd tcpcomm: error: "), message)
            self.assertNotIn("\n", message, args)

    def test_pluginMakesService(self) -> None:
        """
        The plugin twistd finds as C{tcpcomm} turns the parsed subcommand
        options into a service with one listening child per port.
        """
        config = ServerOptions()
        config.parseOptions(["tcpcomm", "-p", LOOPBACK_PORT])
        plugin = config.loadedPlugins["tcpcomm"]
        self.assertTrue(IServiceMaker.providedBy(plugin))
        self.assertEqual(plugin.tapname, "tcpcomm")
        self.assertIsInstance(config.subOptions, Options)
        self.assertEqual(config.subOptions["ports"], [LOOPBACK_PORT + ":backlog=1024"])
        service = plugin.makeService(config.subOptions)
        self.assertTrue(IService.providedBy(service))
        self.assertEqual(len(endpointServices(service)), 1)


class PluginModuleTests(SynchronousTestCase):
    """
    The plugin module, C{twisted/plugins/tcpcomm_plugin.py}.
    """

    def test_importIsCheap(self) -> None:
        """
        Running this checkout's plugin module (as C{twistd --help} imports
        it), in a fresh isolated interpreter, imports neither the reactor nor
        any of C{tcpcomm}.
        """
        script = (
            "import json, runpy, sys\n"
            "plugin = runpy.run_path(sys.argv[1])\n"
            "print(json.dumps({\n"
            "    'reactor': 'twisted.internet.reactor' in sys.modules,\n"
            "    'tcpcomm': sorted(m for m in sys.modules\n"
            "                      if m == 'tcpcomm' or m.startswith('tcpcomm.')),\n"
            "    'tapname': plugin['tcpcomm'].tapname,\n"
            "    'module': plugin['tcpcomm'].module,\n"
            "}))\n"
        )
        pluginFile = SOURCE_ROOT / "twisted" / "plugins" / "tcpcomm_plugin.py"
        child = runToEnd(
            self,
            [sys.executable, "-I", "-c", script, str(pluginFile)],
            temporaryDirectory(self),
        )
        self.assertEqual(child.process.returncode, 0, child.output())
        found = json.loads(child.stdout())
        self.assertFalse(found["reactor"])
        self.assertEqual(found["tcpcomm"], [])
        self.assertEqual(found["tapname"], "tcpcomm")
        self.assertEqual(found["module"], "tcpcomm.tap")


class MakeFactoryTests(SynchronousTestCase):
    """
    L{makeFactory} builds the factory the options describe.
    """

    def test_lineDefaults(self) -> None:
        """
        By default: a L{LineFactory} echoing lines, LF replies, 65536 bytes.
        """
        factory = makeFactory(parse(self, []))
        assert isinstance(factory, LineFactory)
        self.assertIs(factory.handler, echoLine)
        self.assertEqual(factory.delimiter, b"\n")
        self.assertEqual(factory.maxLineLength, 65536)

    def test_lineOptions(self) -> None:
        """
        C{--delimiter}, C{--max-line-length} and C{--handler} reach the
        factory.
        """
        factory = makeFactory(
            parse(
                self,
                [
                    "--delimiter",
                    "crlf",
                    "--max-line-length",
                    "9",
                    "--handler",
                    "tests.test_tap:shout",
                ],
            )
        )
        assert isinstance(factory, LineFactory)
        self.assertIs(factory.handler, shout)
        self.assertEqual(factory.delimiter, b"\r\n")
        self.assertEqual(factory.maxLineLength, 9)

    def test_framing(self) -> None:
        """
        C{--framing} reaches the factory, which frames replies that way.
        """
        factory = makeFactory(parse(self, ["--framing", "length:2:order=little"]))
        assert isinstance(factory, LineFactory)
        self.assertEqual(factory.framing, "length:2:order=little")
        assert factory.encode is not None
        self.assertEqual(factory.encode(b"abc"), b"\x03\x00abc")

    def test_echo(self) -> None:
        """
        C{--protocol echo} gives an L{EchoFactory}.
        """
        self.assertIsInstance(
            makeFactory(parse(self, ["--protocol", "echo"])), EchoFactory
        )


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} on a L{MemoryReactor}: what it listens on, with what.
    """

    def test_oneChildPerPort(self) -> None:
        """
        Each C{--port} becomes one child service, all sharing one factory,
        listening with the reactor given, on the interface and with the
        backlog asked for.
        """
        memory = MemoryReactor()
        options = parse(
            self,
            ["-p", "tcp:8001:interface=127.0.0.1", "-p", "tcp:8002:backlog=5"],
        )
        service = makeService(options, reactor=memory)
        self.assertTrue(IService.providedBy(service))
        children = endpointServices(service)
        self.assertEqual(len(children), 2)
        self.assertIs(children[0].factory, children[1].factory)
        self.assertIsInstance(children[0].factory, LineFactory)

        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(
            [(port, backlog, host) for port, _, backlog, host in memory.tcpServers],
            [(8001, 1024, "127.0.0.1"), (8002, 5, "")],
        )
        self.assertIs(memory.tcpServers[0][1], children[0].factory)

    def test_echoService(self) -> None:
        """
        With C{--protocol echo} the service listens with an L{EchoFactory}.
        """
        memory = MemoryReactor()
        service = makeService(parse(self, ["--protocol", "echo"]), reactor=memory)
        service.privilegedStartService()
        self.addCleanup(service.stopService)
        [(port, factory, backlog, interface)] = memory.tcpServers
        self.assertEqual((port, backlog, interface), (8000, 1024, ""))
        self.assertIsInstance(factory, EchoFactory)


class LiveServiceTests(TestCase):
    """
    L{makeService} listening for real on 127.0.0.1, talked to with
    L{exchange}.
    """

    async def test_lineModeWithHandlerAndCrlf(self) -> None:
        """
        In line mode with C{--handler} and C{--delimiter crlf}, each line
        comes back through the handler, ending in CRLF; a last line without
        a delimiter is answered at half-close.
        """
        options = parse(
            self,
            [
                "-p",
                LOOPBACK_PORT,
                "--handler",
                "tests.test_tap:shout",
                "--delimiter",
                "crlf",
            ],
        )
        [port] = startRecorded(self, makeService(options))
        reply = await exchange(reactor, loopback(port), b"hello\r\nworld\nagain", 10)
        self.assertEqual(reply, b"HELLO\r\nWORLD\r\nAGAIN\r\n")

    async def test_lineModeMaxLineLength(self) -> None:
        """
        C{--max-line-length} limits the lines the running server accepts.
        """
        options = parse(self, ["-p", LOOPBACK_PORT, "--max-line-length", "4"])
        [port] = startRecorded(self, makeService(options))
        reply = await exchange(reactor, loopback(port), b"abcd\nabcde\nabc\n", 10)
        self.assertEqual(reply, b"abcd\nERROR line too long (limit 4 bytes)\n")

    async def test_echoMode(self) -> None:
        """
        In echo mode every byte, line delimiters included, comes back as
        sent.
        """
        options = parse(self, ["-p", LOOPBACK_PORT, "--protocol", "echo"])
        [port] = startRecorded(self, makeService(options))
        data = bytes(range(256)) * 64
        self.assertEqual(await exchange(reactor, loopback(port), data, 10), data)

    async def test_chatMode(self) -> None:
        """
        In chat mode a line from one client reaches the other as
        C{<NAME> line}, CRLF-terminated with C{--delimiter crlf}.
        """
        from twisted.internet.endpoints import connectProtocol

        from tests.test_chat import Collector
        from tests.test_line import waitUntil

        options = parse(self, ["-p", LOOPBACK_PORT, "--protocol", "chat"])
        service = makeService(options)
        [port] = startRecorded(self, service)
        speaker, listener = Collector(), Collector()
        await connectProtocol(loopback(port), speaker)
        await connectProtocol(loopback(port), listener)
        factory = service.factory  # type: ignore[attr-defined]
        await waitUntil(lambda: len(factory.room.members) == 2)
        speaker.sendLine(b"/nick sam")
        speaker.sendLine(b"hello")
        await waitUntil(lambda: b"<sam> hello" in listener.lines)
        self.assertEqual(factory.stats.connectionsOpen, 2)
        speaker.transport.loseConnection()
        listener.transport.loseConnection()
        await waitUntil(lambda: factory.stats.connectionsOpen == 0)

    async def test_relayMode(self) -> None:
        """
        In relay mode, with C{--tag}, a client's lines reach the upstream
        server prefixed with the client's address, and the upstream's
        answers come back to that client.
        """
        from twisted.internet.endpoints import connectProtocol

        from tcpcomm.testing import startServer
        from tests.test_chat import Collector
        from tests.test_line import waitUntil

        heard: list[bytes] = []

        def upstreamHandler(line: bytes) -> bytes:
            heard.append(line)
            tag, _, text = line.partition(b" ")
            return tag + b" got " + text

        upstream = startServer(self, LineFactory(upstreamHandler))
        options = parse(
            self,
            [
                "-p",
                LOOPBACK_PORT,
                "--protocol",
                "relay",
                "--tag",
                "--upstream",
                f"127.0.0.1:{upstream.port}",
            ],
        )
        service = makeService(options)
        [port] = startRecorded(self, service)
        client = Collector()
        await connectProtocol(loopback(port), client)
        client.sendLine(b"one")
        client.sendLine(b"two")
        await waitUntil(lambda: client.lines == [b"got one", b"got two"])
        self.assertEqual([line.split(b" ", 1)[1] for line in heard], [b"one", b"two"])
        self.assertTrue(heard[0].startswith(b"127.0.0.1:"))
        client.transport.loseConnection()

    async def test_severalPorts(self) -> None:
        """
        Every C{--port} listens and serves.
        """
        options = parse(self, ["-p", LOOPBACK_PORT, "-p", LOOPBACK_PORT])
        ports = startRecorded(self, makeService(options))
        self.assertEqual(len(set(ports)), 2)
        for port in ports:
            self.assertEqual(
                await exchange(reactor, loopback(port), b"x\n", 10), b"x\n"
            )

    async def test_pluginServiceServes(self) -> None:
        """
        The service twistd would build through the plugin (with the global
        reactor) serves clients.
        """
        self.addCleanup(sys.path.__setitem__, slice(None), sys.path[:])
        config = ServerOptions()
        config.parseOptions(
            ["tcpcomm", "-p", LOOPBACK_PORT, "--handler", "tests.test_tap:shout"]
        )
        service = config.loadedPlugins["tcpcomm"].makeService(config.subOptions)
        [port] = startRecorded(self, service)
        self.assertEqual(await exchange(reactor, loopback(port), b"hi\n", 10), b"HI\n")

    def test_busyPort(self) -> None:
        """
        Starting on a port another listener holds raises L{SystemExit} with
        one readable line saying it couldn't listen.
        """
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        options = parse(self, ["-p", f"tcp:{busy}:interface=127.0.0.1"])
        service = makeService(options)
        error = self.assertRaises(SystemExit, startRecorded, self, service)
        message = str(error.code)
        self.assertTrue(message.startswith("twistd tcpcomm: error: "), message)
        self.assertIn("Couldn't listen", message)
        self.assertIn(str(busy), message)
        self.assertNotIn("\n", message)

    async def test_busyLaterPortClosesEarlierOnes(self) -> None:
        """
        When a later C{--port} is busy, the ports already bound are closed
        again before start-up stops.
        """
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        options = parse(
            self, ["-p", LOOPBACK_PORT, "-p", f"tcp:{busy}:interface=127.0.0.1"]
        )
        service = makeService(options)
        [first, _] = endpointServices(service)
        recorder = RecordingEndpoint(first.endpoint)
        first.endpoint = recorder
        self.assertRaises(SystemExit, service.privilegedStartService)
        [port] = recorder.ports
        number = port.getHost().port  # type: ignore[attr-defined]
        with self.assertRaises(ConnectionFailed) as caught:
            await exchange(reactor, loopback(number), b"", 5)
        self.assertIn("refused", str(caught.exception))


class LoadHandlerTests(SynchronousTestCase):
    """
    L{loadHandler} finds handlers, and looks in a directory only as a last
    resort.
    """

    def test_directoryUsedWhenNeeded(self) -> None:
        """
        A module found only in C{directory} is loaded, may import its
        neighbours there as it is imported, and leaves C{sys.path} as it was.
        """
        before = sys.path[:]
        directory = str(temporaryDirectory(self))
        Path(directory, "tcpcommhandlerprobe.py").write_text(
            "from tcpcommhandlerneighbour import PREFIX\n"
            "def reply(line):\n    return PREFIX + line\n"
        )
        Path(directory, "tcpcommhandlerneighbour.py").write_text("PREFIX = b'probe '\n")
        for name in ("tcpcommhandlerprobe", "tcpcommhandlerneighbour"):
            self.addCleanup(sys.modules.pop, name, None)
        handler = loadHandler("tcpcommhandlerprobe:reply", directory)
        self.assertEqual(handler(b"x"), b"probe x")
        self.assertEqual(sys.path, before)

    def test_plantedStandardModuleNotImported(self) -> None:
        """
        A file in C{directory} named like a standard library module
        (C{colorsys.py}) stands in for it neither while the handler is
        imported (the handler's own C{import colorsys}) nor after (a later
        import of the module anywhere in the process).
        """
        directory = str(temporaryDirectory(self))
        Path(directory, "colorsys.py").write_text("PLANTED = True\n")
        Path(directory, "tcpcommplantedprobe.py").write_text(
            "import colorsys\ndef reply(line):\n    return line\n"
        )
        self.addCleanup(sys.modules.pop, "tcpcommplantedprobe", None)
        real = sys.modules.pop("colorsys", None)

        def restore() -> None:
            sys.modules.pop("colorsys", None)
            if real is not None:
                sys.modules["colorsys"] = real

        self.addCleanup(restore)
        loadHandler("tcpcommplantedprobe:reply", directory)
        imported = sys.modules["tcpcommplantedprobe"].colorsys
        self.assertFalse(hasattr(imported, "PLANTED"), imported.__file__)
        del sys.modules["colorsys"]
        later = importlib.import_module("colorsys")
        self.assertFalse(hasattr(later, "PLANTED"), later.__file__)

    def test_directoryNotKeptOnFailure(self) -> None:
        """
        A module found nowhere leaves C{sys.path} as it was.
        """
        before = sys.path[:]
        directory = str(temporaryDirectory(self))
        self.assertRaises(ValueError, loadHandler, "tcpcommnosuchmodule:f", directory)
        self.assertEqual(sys.path, before)


MODE_OPTION_VALUES: dict[str, list[str]] = {
    "handler": ["--handler", "tests.test_tap:shout"],
    "handler-timeout": ["--handler-timeout", "0"],
    "framing": ["--framing", "line"],
    "delimiter": ["--delimiter", "lf"],
    "max-line-length": ["--max-line-length", "65536"],
    "max-pending-bytes": ["--max-pending-bytes", "1048576"],
    "upstream": ["--upstream", "localhost:9"],
    "tag": ["--tag"],
    "queue-limit": ["--queue-limit", "10000"],
    "queue-bytes": ["--queue-bytes", "16777216"],
    "workers": ["--workers", "1"],
    "worker-fds": ["--worker-fds", "3"],
}
"""
Each mode-specific option given at its default (or a harmless) value.
"""

COMMON_OPTIONS = frozenset(
    {
        "help",
        "version",
        "port",
        "protocol",
        "max-connections",
        "max-connections-per-ip",
        "idle-timeout",
        "shutdown-timeout",
        "proxy-header-timeout",
        "metrics",
    }
)
"""
The options that apply to every protocol.
"""


def inMode(protocol: str, args: Sequence[str]) -> list[str]:
    """
    C{args} with C{--protocol protocol} (and an upstream, for relay).
    """
    extra = ["--upstream", "localhost:9"] if protocol == "relay" else []
    if "--upstream" in args:
        extra = []
    return ["--protocol", protocol, *args, *extra]


class ModeOptionsTests(SynchronousTestCase):
    """
    Options of one mode are refused in the others, as {MODE_OPTIONS} says.
    """

    def test_everyOptionDecided(self) -> None:
        """
        Every option of L{Options} either applies to every protocol or is in
        L{MODE_OPTIONS}, so that a new option cannot be forgotten.
        """
        names = {name.rstrip("=") for name in Options().longOpt}
        self.assertEqual(names - COMMON_OPTIONS, set(MODE_OPTIONS))
        self.assertEqual(set(MODE_OPTION_VALUES), set(MODE_OPTIONS))

    def test_refusedInOtherModes(self) -> None:
        """
        Each mode-specific option, at its default value, is refused in every
        other protocol with one line naming the protocols it belongs to.
        """
        expected = {
            ("line",): "line",
            ("line", "echo"): "line and echo",
            ("chat", "relay"): "chat and relay",
            ("line", "chat", "relay"): "line, chat and relay",
            ("relay",): "relay",
        }
        refused = 0
        for name, modes in MODE_OPTIONS.items():
            for protocol in set(PROTOCOLS) - set(modes):
                message = usageError(self, inMode(protocol, MODE_OPTION_VALUES[name]))
                self.assertEqual(
                    message,
                    f"--{name} applies to --protocol {expected[modes]} only,"
                    f" not {protocol}",
                )
                refused += 1
        self.assertEqual(refused, 27)

    def test_acceptedInTheirModes(self) -> None:
        """
        Each mode-specific option is accepted in each of its protocols.
        """
        for name, modes in MODE_OPTIONS.items():
            for protocol in modes:
                options = parse(self, inMode(protocol, MODE_OPTION_VALUES[name]))
                self.assertEqual(options["protocol"], protocol)
                self.assertIn(name, options.given)

    def test_commonOptionsInEveryMode(self) -> None:
        """
        The options that are not mode-specific are accepted in every protocol.
        """
        common = [
            "--max-connections=5",
            "--max-connections-per-ip=2",
            "--idle-timeout=1",
            "--shutdown-timeout=1",
            "--port=tcp:0:interface=127.0.0.1",
        ]
        for protocol in PROTOCOLS:
            options = parse(self, inMode(protocol, common))
            self.assertEqual(options["idle-timeout"], 1.0)

    def test_abbreviationRecorded(self) -> None:
        """
        An option given by an abbreviation of its name is refused as well.
        """
        message = usageError(self, ["--queue-l=5"])
        self.assertEqual(
            message, "--queue-limit applies to --protocol relay only, not line"
        )

    def test_oneLineUnderTwistd(self) -> None:
        """
        Under twistd the refusal is one C{twistd tcpcomm: error:} line.
        """
        message = subcommandError(self, ["--protocol", "echo", "--delimiter", "lf"])
        self.assertEqual(
            message,
            "twistd tcpcomm: error: --delimiter applies to --protocol line, chat"
            " and relay only, not echo",
        )


NONSENSE_SECONDS = [
    "1e-9",
    "0.009",
    "-1",
    "-0.5",
    "nan",
    "inf",
    "-inf",
    "604800.5",
    "1e308",
    "",
    "abc",
    "9" * 5000,
]


class FramingOptionTests(SynchronousTestCase):
    """
    C{--framing}: checked at start-up, and kept apart from the options that
    belong to lines.
    """

    def test_badSpecOneLine(self) -> None:
        """
        A bad framing specification is one line naming it and what is wrong.
        """
        for spec, problem in [
            ("lenght:4", "unknown framing 'lenght'"),
            ("length:5", "length:5"),
            ("delimiter:zz", "hex"),
            ("fixed:0", "fixed:0"),
            ("length:4:max=x", "whole number"),
        ]:
            message = usageError(self, ["--framing", spec])
            self.assertIn("--framing", message)
            self.assertIn(problem, message)
            self.assertNotIn("\n", message)

    def test_chatTakesLinesOnly(self) -> None:
        """
        Chat carries text: a framing other than C{line} is refused there,
        and C{line} is accepted.
        """
        message = usageError(self, ["--protocol", "chat", "--framing", "length:4"])
        self.assertIn("chat carries lines only", message)
        parse(self, ["--protocol", "chat", "--framing", "line"])

    def test_lineOptionsRefusedWithOtherFramings(self) -> None:
        """
        C{--delimiter}, C{--max-line-length} and C{--tag} belong to line
        framing: with another they are refused, naming the framing.
        """
        for protocol, args in [
            ("line", ["--delimiter", "crlf"]),
            ("line", ["--max-line-length", "10"]),
            ("relay", ["--tag"]),
        ]:
            message = usageError(
                self, inMode(protocol, ["--framing", "netstring", *args])
            )
            self.assertIn(f"{args[0]} applies to --framing line only", message)
            self.assertIn("netstring", message)

    def test_lineMaxIsTheLineLimit(self) -> None:
        """
        C{--framing line:max=N} is the longest line in every mode that takes
        lines, chat included, as C{--max-line-length N} would be.
        """
        for protocol in ("line", "chat", "relay"):
            config = parse(self, inMode(protocol, ["--framing", "line:max=10"]))
            factory = makeFactory(config)
            self.assertEqual(factory.maxLineLength, 10, protocol)  # type: ignore[attr-defined]

    def test_lineMaxAndMaxLineLength(self) -> None:
        """
        C{--framing line:max=N} with C{--max-line-length}: two limits for one
        thing, refused in one line naming both, whether they agree or not.
        """
        for length in ("200", "10"):
            message = usageError(
                self,
                ["--framing", "line:max=10", "--max-line-length", length],
            )
            self.assertIn("--max-line-length and --framing line:max=10", message)
            self.assertNotIn("\n", message)

    def test_framingInRelay(self) -> None:
        """
        Relay mode takes a framing, and its factory frames with it.
        """
        factory = makeFactory(parse(self, inMode("relay", ["--framing", "stx-etx"])))
        self.assertEqual(factory.framing, "stx-etx")  # type: ignore[attr-defined]


class OptionRangeTests(SynchronousTestCase):
    """
    Every numeric option is range-checked at start-up, naming the option.
    """

    def test_timeoutsRefuseNonsense(self) -> None:
        """
        A timeout that is not 0 or from 0.01 to 604800 seconds is refused.
        """
        for name, protocol in (
            ("idle-timeout", "echo"),
            ("handler-timeout", "line"),
            ("shutdown-timeout", "chat"),
        ):
            for value in NONSENSE_SECONDS:
                message = usageError(self, inMode(protocol, [f"--{name}={value}"]))
                self.assertEqual(
                    message,
                    f"--{name}: expected 0 or seconds from 0.01 to 604800,"
                    f" not {value[:40]!r}",
                )

    def test_timeoutsAcceptTheirRange(self) -> None:
        """
        0 (also as C{-0}), 0.01 and 604800 seconds are accepted, as floats.
        """
        for value, seconds in (
            ("0", 0.0),
            ("-0", 0.0),
            ("0.01", 0.01),
            ("6048e2", 604800.0),
        ):
            for name in ("idle-timeout", "handler-timeout", "shutdown-timeout"):
                parsed = parse(self, [f"--{name}={value}"])[name]
                self.assertEqual((parsed, str(parsed)), (seconds, str(seconds)))

    def test_countsRefuseNonsense(self) -> None:
        """
        Counts and byte sizes out of their range, or not whole numbers, are
        refused, naming the option and the range.
        """
        cases = [
            ("max-line-length", "line", 1, 1 << 30),
            ("max-pending-bytes", "chat", 1, 1 << 30),
            ("max-connections", "line", 0, 1_000_000),
            ("max-connections-per-ip", "echo", 0, 1_000_000),
            ("queue-limit", "relay", 0, 10_000_000),
        ]
        for name, protocol, low, high in cases:
            for value in (
                str(low - 1),
                str(high + 1),
                "1e3",
                "1.5",
                "",
                "nan",
                "9" * 5000,
            ):
                message = usageError(self, inMode(protocol, [f"--{name}={value}"]))
                self.assertEqual(
                    message,
                    f"--{name}: expected a whole number from {low} to {high:,},"
                    f" not {value[:40]!r}",
                )
            for bound in (low, high):
                parsed = parse(self, inMode(protocol, [f"--{name}={bound}"]))
                self.assertEqual(parsed[name], bound)

    def test_helpShowsRanges(self) -> None:
        """
        C{--help} states each numeric option's range.
        """
        help = " ".join(str(Options()).split())
        for text in (
            "--idle-timeout= Close",
            "[default: 300.0]. 0, or seconds from 0.01 to 604800.",
            "[default: 65536]. A whole number from 1 to 1,073,741,824.",
            "[default: 10000]. A whole number from 0 to 1,000,000.",
            "[default: 10000]. A whole number from 0 to 10,000,000.",
        ):
            self.assertIn(text, help)

    def test_backlogRange(self) -> None:
        """
        A port's backlog out of 1..65535 is refused with one line.
        """
        message = usageError(self, ["--port", "tcp:0:backlog=0"])
        self.assertEqual(
            message, "--port: backlog must be a whole number from 1 to 65535, not '0'"
        )


class SteppingClock(Clock):
    """
    A clock that moves on 10 ms each time it is read (as real time moves on
    between two reads, here more than a sweep interval of the shortest idle
    timeout), and that refuses a negative delay as a reactor does.
    """

    def seconds(self) -> float:
        self.rightNow += 0.01
        return self.rightNow

    def callLater(self, delay: float, *args: Any, **kwargs: Any) -> Any:
        assert delay >= 0, f"{delay} is not greater than or equal to 0 seconds"
        return super().callLater(delay, *args, **kwargs)


class TinyIdleTimeoutTests(SynchronousTestCase):
    """
    The idle sweeper copes with sweeps that are due before it schedules them.
    """

    def test_sweepDueAlreadyIsScheduledNow(self) -> None:
        """
        With the clock moving on more than a sweep interval between two
        reads, each sweep is scheduled with no delay instead of raising, and
        the idle connection is closed after its sweeps.
        """
        clock = SteppingClock()
        factory = LineFactory(idleTimeout=0.01, clock=clock)
        transport = connectFrom(factory)
        for _ in range(IDLE_SWEEPS + 1):
            (sweep,) = clock.calls
            clock.calls.remove(sweep)
            sweep.func(*sweep.args, **sweep.kw)
        self.assertEqual(factory.stats.idleTimeouts, 1)
        self.assertIn(b"ERROR idle timeout", transport.value())


ACTIVATOR = """
import os, socket, sys
listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listening.bind(("127.0.0.1", 0))
listening.listen(8)
print(listening.getsockname()[1], flush=True)
fd = listening.detach()
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
if sys.argv[1]:
    os.environ["LISTEN_FDNAMES"] = sys.argv[1]
os.execv(sys.argv[2], sys.argv[2:])
"""
"""
What systemd does for socket activation, in a few lines: bind a listening
socket on 127.0.0.1, pass it as descriptor 3, set C{LISTEN_FDS},
C{LISTEN_PID} (the same process after C{exec}) and, if C{argv[1]} is not
empty, C{LISTEN_FDNAMES}; then run the command in C{argv[2:]}.  The port is
the first line of standard output.
"""


class SystemdActivationTests(SynchronousTestCase):
    """
    C{--port systemd:...} with a socket inherited as systemd passes it.
    """

    def activated(self, names: str, description: str) -> tuple[Child, int]:
        """
        Start C{twistd -n tcpcomm --port description} under L{ACTIVATOR}
        with C{LISTEN_FDNAMES} set to C{names} (unset if empty).
        """
        from tests.test_plugin import START_TIMEOUT, Child, twistdCommand

        twistd = twistdCommand()
        if len(twistd) != 1:
            raise SkipTest("no twistd script next to this Python to exec")
        args = ["-n", "--pidfile=", "tcpcomm", "--port", description]
        child = Child(
            self,
            [sys.executable, "-c", ACTIVATOR, names, twistd[0], *args],
            temporaryDirectory(self),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not child.stdout().endswith("\n") and time.monotonic() < deadline:
            time.sleep(0.02)
        return child, int(child.stdout().splitlines()[0])

    def test_namedActivationServes(self) -> None:
        """
        With C{LISTEN_FDNAMES} set (systemd, or C{systemd-socket-activate
        --fdname}), C{index=0} and C{name=} both serve the inherited socket.
        """
        from tests.test_plugin import talk

        for description in (
            "systemd:domain=INET:index=0",
            "systemd:domain=INET:name=web",
        ):
            child, port = self.activated("web", description)
            self.assertEqual(talk(port, b"hello\n")[0], b"hello\n", child.output())
            self.assertEqual(child.terminate(), -signal.SIGTERM, child.output())

    def test_indexWithoutNamesServes(self) -> None:
        """
        Without C{LISTEN_FDNAMES} (C{systemd-socket-activate} without
        C{--fdname}, systemd before 227), C{index=0} serves the inherited
        (blocking) socket, one connection after another.
        """
        from tests.test_plugin import talk

        child, port = self.activated("", "systemd:domain=INET:index=0")
        for line in (b"hello\n", b"again\n"):
            self.assertEqual(talk(port, line)[0], line, child.output())
        self.assertEqual(child.terminate(), -signal.SIGTERM, child.output())

    def test_missingWithoutNamesIsOneLine(self) -> None:
        """
        Without C{LISTEN_FDNAMES}, an index beyond the sockets passed, or a
        name, stops start-up with one line saying why, and exit status 1.
        """
        for description, reason in (
            (
                "systemd:domain=INET:index=1",
                "no socket inherited at index 1: 1 socket was passed"
                " (LISTEN_FDS=1), so index must be 0",
            ),
            (
                "systemd:domain=INET:name=web",
                "no socket inherited named 'web': 1 socket was passed without"
                " names (LISTEN_FDNAMES is not set; systemd-socket-activate"
                " sets it with --fdname=NAME): use index=N, from 0",
            ),
        ):
            child, _ = self.activated("", description)
            self.assertEqual(child.wait(), 1, child.output())
            self.assertEqual(
                child.stderr().splitlines(),
                [f"twistd tcpcomm: error: --port {description}: {reason}"],
            )


class SystemdOptionTests(SynchronousTestCase):
    """
    C{--port systemd:...} in a process that inherited no socket.
    """

    def test_missingSocketExplained(self) -> None:
        """
        An index or name that matches no inherited socket is refused with
        one line saying that none were passed and how to pass one.
        """
        for description, which in (
            ("systemd:domain=INET:index=0", "at index 0"),
            ("systemd:domain=INET6:name=web", "named 'web'"),
        ):
            message = usageError(self, ["--port", description])
            self.assertEqual(
                message,
                f"--port {description}: no socket inherited {which}: none were"
                " passed to this process (LISTEN_FDS and LISTEN_PID are not set"
                " for it): start tcpcomm from a systemd socket unit or under"
                " systemd-socket-activate",
            )

    def test_unknownDomain(self) -> None:
        """
        An unknown domain is named, not reported as C{list index out of range}.
        """
        message = usageError(self, ["--port", "systemd:domain=FOO:index=0"])
        self.assertEqual(
            message,
            "--port systemd:domain=FOO:index=0: unknown domain 'FOO': use INET,"
            " INET6 or UNIX",
        )

    def test_malformedLeftToTwisted(self) -> None:
        """
        A description with neither or both of C{index} and C{name}, or an
        index that is no number, is explained as Twisted's parser says it,
        in words.
        """
        for description, reason in (
            ("systemd:domain=INET", "Specify exactly one of descriptor index or name"),
            ("systemd:domain=INET:index=0:name=x", "Specify exactly one"),
            ("systemd:domain=INET:index=x", "'x' is not a number"),
        ):
            message = usageError(self, ["--port", description])
            self.assertIn(f"bad endpoint {description!r}: {reason}", message)


class UnixSocketModeTests(TestCase):
    """
    UNIX sockets tcpcomm listens on are not world-writable by default.
    """

    def listenedMode(self, description: str) -> int:
        """
        Listen on C{description} as C{--port} gives it to L{makeService} and
        return the socket file's permission bits.
        """
        directory = temporaryDirectory(self)
        path = directory / "s.sock"
        options = parse(self, ["--port", description.format(path=path)])
        service = makeService(options, reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_defaultMode660(self) -> None:
        """
        C{--port unix:PATH} makes a socket with mode 0660 (Twisted: 0666),
        whatever the umask.
        """
        previous = os.umask(0)
        self.addCleanup(os.umask, previous)
        self.assertEqual(self.listenedMode("unix:{path}"), 0o660)

    def test_explicitModeKept(self) -> None:
        """
        C{mode=} given in the description is used as given.
        """
        self.assertEqual(self.listenedMode("unix:{path}:mode=600"), 0o600)
        self.assertEqual(self.listenedMode("unix:{path}:mode=666"), 0o666)


class RelayToItselfTests(SynchronousTestCase):
    """
    A relay whose upstream is its own port is refused at start-up.
    """

    def test_ownPortRefused(self) -> None:
        """
        C{--upstream} naming this host and one of the server's own ports is
        one line, naming the upstream.
        """
        message = usageError(
            self,
            ["--protocol", "relay", "--upstream", "localhost:8051", "--port", "8051"],
        )
        self.assertIn("--upstream localhost:8051 is this server's own port", message)

    def test_whichUpstreamsAreOwn(self) -> None:
        """
        Only a local host on a port the server listens on (on every
        interface, or on that host) counts.
        """
        ports = ["tcp:8051:interface=127.0.0.1", "tcp6:port=8052", "unix:/s"]
        self.assertTrue(upstreamIsOwnPort("127.0.0.1:8051", ports))
        self.assertTrue(upstreamIsOwnPort("localhost:8051", ports))
        self.assertTrue(upstreamIsOwnPort("[::1]:8052", ports))
        self.assertFalse(upstreamIsOwnPort("[::1]:8051", ports))
        self.assertFalse(upstreamIsOwnPort("127.0.0.1:8053", ports))
        self.assertFalse(upstreamIsOwnPort("example.com:8051", ports))
        self.assertFalse(upstreamIsOwnPort("unix:path=/s", ports))
