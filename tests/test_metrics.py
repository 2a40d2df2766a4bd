"""
Tests for L{tcpcomm.metrics} and L{tcpcomm.workermetrics}: C{--metrics}.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site

from tcpcomm.chat import ChatFactory
from tcpcomm.client import clientEndpoint, exchange
from tcpcomm.connection import ConnectionFactory
from tcpcomm.echo import EchoFactory
from tcpcomm.line import LineFactory
from tcpcomm.metrics import (
    CONTENT_TYPE,
    MetricsResource,
    metricsSite,
    serverRegistry,
)
from tcpcomm.relay import RelayFactory
from tcpcomm.testing import startServer
from tcpcomm.workermetrics import (
    WorkersResource,
    WorkerSums,
    fetchMetrics,
    httpGet,
)
from tcpcomm.workers import WorkerSupervisor
from tests.test_echo import StubbornClient
from tests.test_line import LogCapture, connect, waitUntil
from tests.test_plugin import (
    IO_TIMEOUT,
    Child,
    freePort,
    runToEnd,
    startTwistd,
    talk,
    temporaryDirectory,
    twistdCommand,
)
from tests.test_relay import (
    FakeEndpoint,
    connectLineClient,
    recordingUpstream,
    startRelayServer,
)
from tests.test_startup import assertOneErrorLine, busyPort
from tests.test_tap import parse, usageError
from tests.test_workers import (
    PID_HANDLER,
    STARTED,
    FakeProcessReactor,
    isWorker,
    waitFor,
)

PROMETHEUS_CONFIG = Path(__file__).with_name("prometheus.yml")


def families(page: bytes | str) -> dict[str, Metric]:
    """
    Parse a metrics page with prometheus_client's parser, by family name.
    """
    text = page.decode("utf-8") if isinstance(page, bytes) else page
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(page: bytes | str) -> dict[str, float]:
    """
    Each sample of a metrics page, by name and labels as Prometheus writes
    them: C{tcpcomm_refusals_total{reason="max_connections"}}.
    """
    found: dict[str, float] = {}
    for family in families(page).values():
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = (
                sample.value
            )
    return found


def render(factory: ConnectionFactory) -> bytes:
    """
    The metrics page of C{factory}.
    """
    page: bytes = generate_latest(serverRegistry(factory))
    return page


def serveMetrics(testCase: TestCase, resource: MetricsResource) -> int:
    """
    Serve C{resource} as C{/metrics} on a loopback port until the test's
    clean-up; return the port.
    """
    site: Any = metricsSite(resource)
    port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    number: int = port.getHost().port  # type: ignore[attr-defined]
    return number


async def scrape(port: int, path: bytes = b"/metrics") -> bytes:
    """
    Get C{path} from 127.0.0.1:C{port}, which must answer 200.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    response = await httpGet(reactor, endpoint, path)
    assert response.status == 200, response
    return response.body


class CollectorTests(SynchronousTestCase):
    """
    L{tcpcomm.metrics.ServerCollector} reads a factory's counters at scrape
    time.
    """

    def test_everyMetricHasHelpAndType(self) -> None:
        """
        Every metric of every mode (line, echo, chat, relay, with a budget)
        has a HELP text and a TYPE line, and its name starts with
        C{tcpcomm_} or C{process_}; counters end in C{_total}.
        """
        line = LineFactory()
        line.stats.unfinishedBudget = 1000
        relay = RelayFactory(FakeEndpoint())
        for factory in [line, EchoFactory(), ChatFactory(), relay]:
            page = render(factory).decode("utf-8")
            found = families(page)
            self.assertIn("tcpcomm_connections_open", found)
            # No two metrics share a name (a gauge x and a counter x_total).
            self.assertEqual(page.count("# TYPE "), len(found))
            for name, family in found.items():
                self.assertTrue(family.documentation, name)
                self.assertRegex(name, r"^(tcpcomm|process)_")
                exposed = f"{name}_total" if family.type == "counter" else name
                self.assertIn(f"# HELP {exposed} ", page)
                self.assertIn(f"# TYPE {exposed} {family.type}\n", page)

    def test_valuesAreTheCounters(self) -> None:
        """
        Each C{ServerStats} counter shows as its metric, with its value.
        """
        factory = LineFactory()
        stats = factory.stats
        expected = {
            "connectionsOpen": "tcpcomm_connections_open",
            "connectionsTotal": "tcpcomm_connections_total",
            "connectionsRefused": "tcpcomm_connections_refused_total",
            "bytesIn": "tcpcomm_received_bytes_total",
            "bytesOut": "tcpcomm_sent_bytes_total",
            "linesHandled": "tcpcomm_messages_handled_total",
            "handlerErrors": "tcpcomm_handler_errors_total",
            "handlerTimeouts": "tcpcomm_handler_timeouts_total",
            "idleTimeouts": "tcpcomm_idle_timeouts_total",
            "tooSlow": "tcpcomm_too_slow_total",
            "badFrames": "tcpcomm_bad_frames_total",
            "readPauses": "tcpcomm_read_pauses_total",
            "tlsHandshakeFailures": "tcpcomm_tls_handshake_failures_total",
            "tlsHandshakeTimeouts": "tcpcomm_tls_handshake_timeouts_total",
            "proxyHeaderErrors": "tcpcomm_proxy_header_errors_total",
            "unfinishedBytes": "tcpcomm_unfinished_bytes",
            "budgetCloses": "tcpcomm_budget_closes_total",
        }
        for number, field in enumerate(expected, start=11):
            setattr(stats, field, number)
        found = values(render(factory))
        for number, (field, metric) in enumerate(expected.items(), start=11):
            self.assertEqual((field, found[metric]), (field, number))

    def test_refusalsByReason(self) -> None:
        """
        Refusals show by C{reason} label, the known reasons at 0 before any
        refusal and any other reason as counted.
        """
        factory = EchoFactory()
        before = values(render(factory))
        for reason in ["max_connections", "max_connections_per_ip", "connection_rate"]:
            self.assertEqual(before[f'tcpcomm_refusals_total{{reason="{reason}"}}'], 0)
        factory.stats.refusals.update(max_connections=3, something_new=2)
        after = values(render(factory))
        self.assertEqual(after['tcpcomm_refusals_total{reason="max_connections"}'], 3)
        self.assertEqual(after['tcpcomm_refusals_total{reason="something_new"}'], 2)

    def test_budgetOnlyWhenSet(self) -> None:
        """
        The unfinished-frame budget gauge is absent when there is no budget,
        and shows it when there is one.
        """
        factory = LineFactory()
        self.assertNotIn("tcpcomm_unfinished_budget_bytes", families(render(factory)))
        factory.stats.unfinishedBudget = 64 * 1024 * 1024
        self.assertEqual(
            values(render(factory))["tcpcomm_unfinished_budget_bytes"], 64 * 1024 * 1024
        )

    def test_handlerErrorsCounted(self) -> None:
        """
        A handler that raises, whose Deferred fails, whose coroutine raises,
        or that returns a bad reply counts as a handler error each time; a
        good reply does not.
        """

        async def failing() -> bytes:
            raise ValueError("coroutine")

        answers: dict[bytes, Any] = {
            b"ok": lambda: b"fine",
            b"raise": lambda: 1 / 0,
            b"deferred": lambda: fail(ValueError("deferred")),
            b"coroutine": failing,
            b"bad": lambda: 42,
        }
        factory = LineFactory(lambda line: answers[line]())
        protocol, _ = connect(factory)
        for line, errors in [
            (b"ok", 0),
            (b"raise", 1),
            (b"deferred", 2),
            (b"coroutine", 3),
            (b"bad", 4),
        ]:
            protocol.dataReceived(line + b"\n")
            self.assertEqual((line, factory.stats.handlerErrors), (line, errors))
        self.flushLoggedErrors(ZeroDivisionError, ValueError)
        self.assertEqual(values(render(factory))["tcpcomm_handler_errors_total"], 4)

    def test_handlerLatency(self) -> None:
        """
        Once metrics are served (not before: nothing is timed then), a
        handler whose Deferred fires 0.3 s later counts in the 0.5 s bucket
        and adds 0.3 to the sum; one that answers at once counts in every
        bucket as 0 s.
        """
        waiting: list[Deferred[bytes]] = []

        def handler(line: bytes) -> bytes | Deferred[bytes]:
            if line == b"now":
                return line
            waiting.append(Deferred())
            return waiting[-1]

        factory = LineFactory(handler)
        protocol, transport = connect(factory)
        protocol.dataReceived(b"now\n")
        self.assertIsNone(factory.stats.handlerLatency)
        registry = serverRegistry(factory)
        protocol.dataReceived(b"now\nlater\n")
        clock = factory.clock
        clock.advance(0.3)  # type: ignore[attr-defined]
        waiting[0].callback(b"done")
        self.assertEqual(transport.value(), b"now\nnow\ndone\n")
        found = values(generate_latest(registry))
        bucket = 'tcpcomm_handler_latency_seconds_bucket{le="%s"}'
        self.assertEqual(found[bucket % "0.25"], 1)
        self.assertEqual(found[bucket % "0.5"], 2)
        self.assertEqual(found[bucket % "+Inf"], 2)
        self.assertEqual(found["tcpcomm_handler_latency_seconds_count"], 2)
        self.assertAlmostEqual(found["tcpcomm_handler_latency_seconds_sum"], 0.3)

    def test_readPausesCounted(self) -> None:
        """
        Each time reading pauses (the transport's buffer is full) counts
        once, however long it lasts.
        """
        factory = LineFactory()
        protocol, _ = connect(factory)
        protocol.pauseProducing()
        protocol.pauseProducing()
        self.assertEqual(factory.stats.readPauses, 1)
        protocol.resumeProducing()
        protocol.pauseProducing()
        self.assertEqual(factory.stats.readPauses, 2)
        self.assertEqual(values(render(factory))["tcpcomm_read_pauses_total"], 2)

    def test_modeMetrics(self) -> None:
        """
        The handler latency histogram is line mode's; the chat member gauge
        chat's; the relay's queue and upstream metrics the relay's.
        """
        line = families(render(LineFactory()))
        chat = families(render(ChatFactory()))
        relay = families(render(RelayFactory(FakeEndpoint(), queueLimit=7)))
        echo = families(render(EchoFactory()))
        self.assertIn("tcpcomm_handler_latency_seconds", line)
        self.assertEqual(chat["tcpcomm_chat_members"].samples[0].value, 0)
        self.assertEqual(
            relay["tcpcomm_relay_queue_limit_messages"].samples[0].value, 7
        )
        for name in ["tcpcomm_handler_latency_seconds", "tcpcomm_chat_members"]:
            self.assertNotIn(name, relay)
            self.assertNotIn(name, echo)
        self.assertNotIn("tcpcomm_relay_upstream_connected", line)


class MetricsPageTests(TestCase):
    """
    The metrics page over real sockets on 127.0.0.1, after real traffic.
    """

    async def test_lineServer(self) -> None:
        """
        After three clients' lines (one of which makes the handler raise),
        the page counts the connections, bytes, messages and the error.
        """

        def handler(line: bytes) -> bytes:
            if line == b"boom":
                raise ValueError(line)
            return line.upper()

        factory = LineFactory(handler)
        server = startServer(self, factory)
        port = serveMetrics(self, MetricsResource(serverRegistry(factory)))
        sent = [b"a\nb\n", b"boom\n", b"hello\n"]
        replies = [await exchange(reactor, server.endpoint(), data) for data in sent]
        self.assertEqual(replies[0], b"A\nB\n")
        self.flushLoggedErrors(ValueError)
        await waitUntil(lambda: factory.stats.connectionsOpen == 0)
        found = values(await scrape(port))
        self.assertEqual(found["tcpcomm_connections_total"], 3)
        self.assertEqual(found["tcpcomm_connections_open"], 0)
        self.assertEqual(found["tcpcomm_received_bytes_total"], sum(map(len, sent)))
        self.assertEqual(found["tcpcomm_sent_bytes_total"], sum(map(len, replies)))
        self.assertEqual(found["tcpcomm_messages_handled_total"], 4)
        self.assertEqual(found["tcpcomm_handler_errors_total"], 1)
        self.assertEqual(found["tcpcomm_handler_latency_seconds_count"], 4)

    async def test_contentTypeAndNotFound(self) -> None:
        """
        C{/metrics} answers in Prometheus's text format 0.0.4; any other
        path is not found.
        """
        port = serveMetrics(self, MetricsResource(serverRegistry(EchoFactory())))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        response = await httpGet(reactor, endpoint, b"/metrics")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers[b"content-type"], CONTENT_TYPE.encode())
        self.assertEqual(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        for path in [b"/", b"/x", b"/metrics/x", b"/metricsx"]:
            response = await httpGet(reactor, endpoint, path)
            self.assertEqual((path, response.status), (path, 404))

    async def test_chatMembers(self) -> None:
        """
        Two clients in a chat are two members; after one leaves, one.
        """
        factory = ChatFactory()
        server = startServer(self, factory)
        port = serveMetrics(self, MetricsResource(serverRegistry(factory)))
        one, _ = await connectLineClient(self, server)
        await connectLineClient(self, server)
        await waitUntil(lambda: factory.stats.connectionsOpen == 2)
        self.assertEqual(values(await scrape(port))["tcpcomm_chat_members"], 2)
        one.transport.loseConnection()
        await waitUntil(lambda: factory.stats.connectionsOpen == 1)
        self.assertEqual(values(await scrape(port))["tcpcomm_chat_members"], 1)

    async def test_relayWithUpstream(self) -> None:
        """
        A relay connected to a real upstream shows it connected once, and
        the lines it forwarded; nothing queued.
        """
        received: list[bytes] = []
        upstream = recordingUpstream(self, received)
        relayServer, relay = startRelayServer(self, upstream)
        port = serveMetrics(self, MetricsResource(serverRegistry(relay)))
        client, _ = await connectLineClient(self, relayServer)
        await waitUntil(lambda: relay.upstreamConnected)
        for line in [b"one", b"two", b"three"]:
            client.sendLine(line)
        await waitUntil(lambda: len(received) == 3)
        found = values(await scrape(port))
        self.assertEqual(found["tcpcomm_relay_upstream_connected"], 1)
        self.assertEqual(found["tcpcomm_relay_upstream_connections_total"], 1)
        self.assertEqual(found["tcpcomm_relay_forwarded_messages_total"], 3)
        self.assertEqual(found["tcpcomm_relay_queue_messages"], 0)
        self.assertEqual(found["tcpcomm_messages_handled_total"], 3)

    async def test_relayQueue(self) -> None:
        """
        A relay whose upstream is down shows it disconnected, and the lines
        and bytes waiting for it.
        """
        endpoint = clientEndpoint(reactor, f"127.0.0.1:{freePort()}")
        relay = RelayFactory(endpoint, retryPolicy=lambda attempt: 0.05)
        self.addCleanup(relay.whenUpstreamStopped)
        relayServer = startServer(self, relay)
        port = serveMetrics(self, MetricsResource(serverRegistry(relay)))
        client, _ = await connectLineClient(self, relayServer)
        client.sendLine(b"waiting")
        client.sendLine(b"too")
        await waitUntil(lambda: relay.queuedLines == 2)
        found = values(await scrape(port))
        self.assertEqual(found["tcpcomm_relay_upstream_connected"], 0)
        self.assertEqual(found["tcpcomm_relay_upstream_connections_total"], 0)
        self.assertEqual(found["tcpcomm_relay_queue_messages"], 2)
        self.assertEqual(found["tcpcomm_relay_queue_bytes"], len(b"waitingtoo"))
        self.assertEqual(found["tcpcomm_relay_queued_messages_total"], 2)

    async def test_readPausesOverSockets(self) -> None:
        """
        A client that sends 8 MiB to an echo server without reading makes
        the server pause reading, which the page counts.
        """
        factory = EchoFactory()
        server = startServer(self, factory)
        port = serveMetrics(self, MetricsResource(serverRegistry(factory)))
        client = StubbornClient(os.urandom(8 * 1024 * 1024))
        await connectProtocol(server.endpoint(), client)
        await waitUntil(lambda: factory.stats.readPauses > 0)
        self.assertGreaterEqual(
            values(await scrape(port))["tcpcomm_read_pauses_total"], 1
        )
        client.startReading()
        self.assertEqual(len(await client.done), 8 * 1024 * 1024)


def page(**samples: float) -> str:
    """
    A worker's page: the gauge C{open}, the counter C{total}, a
    two-bucket histogram C{latency} and a C{process_} gauge, with the
    values given (0 by default).
    """
    value = {"open": 0.0, "total": 0.0, "fast": 0.0, "slow": 0.0, **samples}
    return (
        "# HELP t_open Open.\n# TYPE t_open gauge\n"
        f"t_open {value['open']}\n"
        "# HELP t_total Total.\n# TYPE t_total counter\n"
        f"t_total {value['total']}\n"
        "# HELP t_latency Latency.\n# TYPE t_latency histogram\n"
        f't_latency_bucket{{le="1.0"}} {value["fast"]}\n'
        f't_latency_bucket{{le="+Inf"}} {value["fast"] + value["slow"]}\n'
        f"t_latency_count {value['fast'] + value['slow']}\n"
        f"t_latency_sum {value['slow'] * 2}\n"
        "# HELP process_open_fds Fds.\n# TYPE process_open_fds gauge\n"
        "process_open_fds 9\n"
    )


class WorkerSumsTests(SynchronousTestCase):
    """
    L{WorkerSums} adds up the workers' pages, scrape after scrape.
    """

    def test_sums(self) -> None:
        """
        Gauges, counters and histogram buckets, sums and counts are summed
        over the workers; C{process_} metrics are left out; the result
        renders as a valid page.
        """
        summed = WorkerSums().add(
            {
                (1, 101): page(open=2, total=10, fast=3, slow=1),
                (2, 102): page(open=1, total=5, fast=1, slow=0),
            }
        )
        text = "".join(
            generate_latest(_Registry(summed)).decode("utf-8").splitlines(True)
        )
        found = values(text)
        self.assertEqual(
            found,
            {
                "t_open": 3,
                "t_total": 15,
                't_latency_bucket{le="1.0"}': 4,
                't_latency_bucket{le="+Inf"}': 5,
                "t_latency_count": 5,
                "t_latency_sum": 2,
            },
        )
        self.assertIn("# TYPE t_latency histogram", text)

    def test_unansweredKeepsItsCounters(self) -> None:
        """
        A worker that does not answer keeps its last counter and histogram
        values in the sums (no counter goes down), but not its gauges.
        """
        sums = WorkerSums()
        sums.add({(1, 101): page(open=2, total=10), (2, 102): page(open=1, total=5)})
        found = values(
            generate_latest(
                _Registry(sums.add({(1, 101): page(open=2, total=11), (2, 102): None}))
            )
        )
        self.assertEqual((found["t_total"], found["t_open"]), (16, 2))

    def test_restartedWorkerAddsToTheOld(self) -> None:
        """
        A worker replaced by a new process (its counters start again from
        0) adds to what the old one had counted.
        """
        sums = WorkerSums()
        sums.add({(1, 101): page(total=10), (2, 102): page(total=5)})
        sums.add({(1, 103): page(total=1), (2, 102): page(total=6)})
        found = values(
            generate_latest(
                _Registry(sums.add({(1, 103): page(total=2), (2, 102): page(total=6)}))
            )
        )
        self.assertEqual(found["t_total"], 18)


class _Registry:
    """
    What C{generate_latest} needs of a registry: the families to render.
    """

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Any:
        return iter(self._families)


class _Silent(Protocol):
    """
    Accept, read and never answer.
    """


class WorkersResourceTests(TestCase):
    """
    The supervisor's page, with workers that answer and one that does not.
    """

    async def test_silentWorkerLeftOut(self) -> None:
        """
        A worker that never answers is left out of the scrape after the
        timeout, and counted unreachable; the others are summed.
        """
        directory = temporaryDirectory(self)
        silentPath = str(directory / "silent.sock")
        silent = reactor.listenUNIX(  # type: ignore[attr-defined]
            silentPath, Factory.forProtocol(_Silent)
        )
        self.addCleanup(silent.stopListening)
        worker = LineFactory()
        worker.stats.connectionsTotal = 4
        answeringPath = str(directory / "worker.sock")
        answering = reactor.listenUNIX(  # type: ignore[attr-defined]
            answeringPath, metricsSite(MetricsResource(serverRegistry(worker)))
        )
        self.addCleanup(answering.stopListening)

        started = time.monotonic()
        with self.assertRaises(TimeoutError):
            await fetchMetrics(reactor, silentPath, timeout=0.2)
        self.assertLess(time.monotonic() - started, 2)

        running = [(1, 11, answeringPath), (2, 12, silentPath)]
        resource = WorkersResource(reactor, 3, lambda: running, timeout=0.2)
        logs = LogCapture(self)
        found = values(await scrape(serveMetrics(self, resource)))
        self.assertIn(
            f"Worker metrics at {silentPath} unavailable: no answer within 0.2 s",
            [formatEvent(event) for event in logs.events],
        )
        self.assertEqual(found["tcpcomm_connections_total"], 4)
        self.assertEqual(found["tcpcomm_workers"], 3)
        self.assertEqual(found["tcpcomm_workers_up"], 1)
        self.assertEqual(found["tcpcomm_workers_unreachable"], 2)
        self.assertIn("process_open_fds", found)


class _FakePort:
    """
    A listening port of L{ListeningFakeReactor}.
    """

    def __init__(self) -> None:
        self.listening = True

    def stopListening(self) -> None:
        self.listening = False


class ListeningFakeReactor(FakeProcessReactor):
    """
    A fake process reactor that also records C{listenTCP}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[tuple[int, object, _FakePort]] = []

    def listenTCP(
        self, port: int, factory: object, backlog: int = 50, interface: str = ""
    ) -> _FakePort:
        listening = _FakePort()
        self.ports.append((port, factory, listening))
        return listening


class SupervisorMetricsTests(SynchronousTestCase):
    """
    L{WorkerSupervisor} with C{--metrics}, on a fake reactor.
    """

    def test_privateSocketsPerWorker(self) -> None:
        """
        The supervisor listens on the C{--metrics} endpoint before dropping
        privileges, makes a private directory (mode 700) only once started
        (as the user its workers run as), starts each worker with its own
        metrics socket there, and removes the directory once they stopped.
        """
        fake = ListeningFakeReactor()
        supervisor = WorkerSupervisor(
            fake,
            [],
            2,
            lambda number: ["python", f"worker{number}"],
            shutdownTimeout=3,
            metrics="tcp:9100:interface=127.0.0.1",
        )
        supervisor.privilegedStartService()
        [(port, site, listening)] = fake.ports
        self.assertEqual(port, 9100)
        self.assertIsInstance(site, Site)
        self.assertEqual(fake.processes, [])
        supervisor.startService()
        sockets = []
        for number, process in enumerate(fake.processes, start=1):
            self.assertEqual(process.args[:2], ["python", f"worker{number}"])
            self.assertEqual(process.args[2], "--metrics")
            match = re.fullmatch(
                r"unix:(.+/worker-(\d)\.sock):mode=600", process.args[3]
            )
            assert match is not None, process.args
            self.assertEqual(int(match.group(2)), number)
            sockets.append(Path(match.group(1)))
        self.assertEqual(len(sockets), 2)
        directory = sockets[0].parent
        self.assertEqual(sockets[1].parent, directory)
        self.assertEqual(directory.stat().st_mode & 0o777, 0o700)
        stopping = supervisor.stopService()
        self.assertFalse(listening.listening)
        for process in fake.processes:
            process.end(ProcessDone(0))
        self.successResultOf(stopping)
        self.assertFalse(directory.exists())


class MetricsOptionTests(SynchronousTestCase):
    """
    C{--metrics ENDPOINT} on the command line.
    """

    def test_parsed(self) -> None:
        """
        C{--metrics} takes a port number or any server endpoint description
        and is off by default.
        """
        self.assertIsNone(parse(self, [])["metrics"])
        self.assertEqual(
            parse(self, ["--metrics", "tcp:9100:interface=127.0.0.1"])["metrics"],
            "tcp:9100:interface=127.0.0.1:backlog=1024",
        )
        self.assertTrue(
            parse(self, ["--metrics", "9100"])["metrics"].startswith("tcp:9100")
        )

    def test_badEndpoint(self) -> None:
        """
        A bad C{--metrics} is one message naming the option.
        """
        for bad in ["", "tcp:99999", "nonsense:1", "tcp:1:backlog=x"]:
            message = usageError(self, ["--metrics", bad])
            self.assertTrue(message.startswith("--metrics: "), message)

    def test_busyPort(self) -> None:
        """
        A busy C{--metrics} port stops start-up with one line and exit
        status 1, with and without workers; no worker is left behind.
        """
        cwd = temporaryDirectory(self)
        for extra in [[], ["--workers", "2"]]:
            with busyPort() as busy:
                child = runToEnd(
                    self,
                    [
                        *twistdCommand(),
                        "-n",
                        "--pidfile=",
                        "tcpcomm",
                        "--port",
                        f"tcp:{freePort()}:interface=127.0.0.1",
                        "--metrics",
                        f"tcp:{busy}:interface=127.0.0.1",
                        *extra,
                    ],
                    cwd,
                )
            assertOneErrorLine(self, child, "Couldn't listen", str(busy))


def get(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    """
    Get C{path} from 127.0.0.1:C{port} with urllib.

    @return: The status, the content type and the body.
    """
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as response:
            body = response.read().decode("utf-8")
            return response.status, response.headers["Content-Type"], body
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], ""


def scrapeWhen(port: int, name: str, value: float) -> dict[str, float]:
    """
    Scrape 127.0.0.1:C{port} until the page's C{name} is C{value} (bounded);
    return that page's samples.
    """
    found: dict[str, float] = {}

    def matches() -> bool:
        nonlocal found
        try:
            found = values(get(port)[2])
        except OSError:  # not listening yet
            return False
        return found.get(name) == value

    waitFor(matches, f"{name} to be {value}")
    return found


class RealTwistdMetricsTests(SynchronousTestCase):
    """
    The real C{twistd tcpcomm --metrics}, scraped with urllib.
    """

    def test_lineServer(self) -> None:
        """
        Two clients' connections, bytes and lines show on the page; it has
        Prometheus's content type, and other paths are not found.
        """
        metricsPort = freePort()
        server, port = startTwistd(
            self,
            ["--metrics", f"tcp:{metricsPort}:interface=127.0.0.1"],
            temporaryDirectory(self),
        )
        # startTwistd connected once to see the server up.
        before = scrapeWhen(metricsPort, "tcpcomm_connections_open", 0)
        self.assertEqual(talk(port, b"hello\nworld\n")[0], b"hello\nworld\n")
        self.assertEqual(talk(port, b"again\n")[0], b"again\n")
        after = scrapeWhen(metricsPort, "tcpcomm_connections_open", 0)
        status, contentType, _ = get(metricsPort)
        self.assertEqual((status, contentType), (200, CONTENT_TYPE))
        for name, grown in [
            ("tcpcomm_connections_total", 2),
            ("tcpcomm_received_bytes_total", 18),
            ("tcpcomm_sent_bytes_total", 18),
            ("tcpcomm_messages_handled_total", 3),
        ]:
            self.assertEqual((name, after[name] - before[name]), (name, grown))
        self.assertEqual(get(metricsPort, "/")[0], 404)
        self.assertEqual(server.terminate(), -signal.SIGTERM)
        self.assertNotIn("Traceback", server.output())

    def test_workersSummed(self) -> None:
        """
        With two workers, one scrape sums both: every connection counted
        once whichever worker served it, both workers up; the workers'
        sockets are in a private directory; a worker killed with SIGKILL
        is restarted and no counter goes down; at stop the directory goes.
        """
        if not sys.platform.startswith("linux"):
            self.skipTest("reads /proc to find worker processes")
        cwd = temporaryDirectory(self)
        (cwd / "workerhandler.py").write_text(PID_HANDLER, encoding="utf-8")
        metricsPort = freePort()
        server, port = startTwistd(
            self,
            [
                "--workers",
                "2",
                "--handler",
                "workerhandler:pid",
                "--metrics",
                f"tcp:{metricsPort}:interface=127.0.0.1",
            ],
            cwd,
        )
        self.addCleanup(self.killWorkers, server)

        def scraped() -> dict[str, float]:
            return values(get(metricsPort)[2])

        # startTwistd connected once to see the server up.
        before = scrapeWhen(metricsPort, "tcpcomm_workers_up", 2)
        served: set[bytes] = set()
        talks = 0
        deadline = time.monotonic() + IO_TIMEOUT
        while (len(served) < 2 or talks < 6) and time.monotonic() < deadline:
            served.add(talk(port, b"x")[0].split()[0])
            talks += 1
        self.assertEqual(len(served), 2)
        found = scrapeWhen(metricsPort, "tcpcomm_connections_open", 0)
        total = found["tcpcomm_connections_total"]
        self.assertEqual(total - before["tcpcomm_connections_total"], talks)
        self.assertEqual(found["tcpcomm_messages_handled_total"], talks)
        self.assertEqual(found["tcpcomm_workers"], 2)
        self.assertEqual(found["tcpcomm_workers_unreachable"], 0)

        pids = {int(n): int(p) for n, p in STARTED.findall(server.output())}
        with open(f"/proc/{pids[1]}/cmdline", "rb") as f:
            command = f.read().split(b"\0")
        socketPath = re.search(
            rb"unix:([^:]+):", command[command.index(b"--metrics", -4) + 1]
        )
        assert socketPath is not None
        directory = Path(os.fsdecode(socketPath.group(1))).parent
        self.assertEqual(directory.stat().st_mode & 0o777, 0o700)

        os.kill(pids[1], signal.SIGKILL)
        waitFor(lambda: not isWorker(pids[1]), "worker 1 to die")
        self.assertGreaterEqual(scraped()["tcpcomm_connections_total"], total)
        scrapeWhen(metricsPort, "tcpcomm_workers_up", 2)
        talk(port, b"x")
        again = scrapeWhen(metricsPort, "tcpcomm_connections_open", 0)
        self.assertEqual(again["tcpcomm_connections_total"], total + 1)
        self.assertEqual(server.terminate(), -signal.SIGTERM)
        self.assertFalse(directory.exists())
        self.assertNotIn("Traceback", server.output())

    def killWorkers(self, server: Child) -> None:
        """
        Kill, by PID, every worker C{server} started that still runs.
        """
        for pid in {int(pid) for _, pid in STARTED.findall(server.output())}:
            if isWorker(pid):
                os.kill(pid, signal.SIGKILL)


class PrometheusConfigTests(TestCase):
    """
    The Prometheus scrape configuration the README shows
    (C{tests/prometheus.yml}).
    """

    async def test_scrapeConfiguration(self) -> None:
        """
        The configuration's job scrapes a loopback target at C{/metrics} (its
        C{metrics_path}, or Prometheus's default), the path and host that a
        server started with the README's C{--metrics} serves: scraped there
        (on a free port), it answers a page Prometheus can parse.
        """
        text = PROMETHEUS_CONFIG.read_text(encoding="utf-8")
        self.assertIn("scrape_configs:", text)
        paths = re.findall(r"^\s*metrics_path:\s*['\"]?([^'\"\s]+)", text, re.M)
        targets = re.findall(r"targets:\s*\[\s*['\"]([^'\"]+)['\"]", text)
        self.assertEqual(len(targets), 1, text)
        host, _, targetPort = targets[0].rpartition(":")
        self.assertEqual(host, "127.0.0.1")
        self.assertTrue(targetPort.isdigit())
        path = (paths or ["/metrics"])[0]
        factory = LineFactory()
        port = serveMetrics(self, MetricsResource(serverRegistry(factory)))
        found = families(await scrape(port, path.encode("ascii")))
        self.assertIn("tcpcomm_connections", found)
