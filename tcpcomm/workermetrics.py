# -*- test-case-name: tests.test_metrics -*-
"""
C{--workers N --metrics ENDPOINT}: one scrape of the supervisor reports the
whole server.

Each worker serves its own metrics on a private UNIX socket (in a
directory of mode 700 that the supervisor makes; see
L{tcpcomm.workers.WorkerSupervisor}).  When Prometheus scrapes the
supervisor, L{WorkersResource} fetches every running worker's page at once
(L{fetchMetrics}, each bounded by L{WORKER_SCRAPE_TIMEOUT}) and
L{WorkerSums} adds them up: gauges are the sum of the workers that
answered; counters and histograms also keep what workers that are gone or
did not answer had counted (their last values), so that a restarted or slow
worker never makes a counter go down.  C{tcpcomm_workers},
C{tcpcomm_workers_up} and C{tcpcomm_workers_unreachable} say how many
workers there are and how many answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, TimeoutError, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from tcpcomm.metrics import MetricsResource

__all__ = [
    "MAX_PAGE_BYTES",
    "WORKER_SCRAPE_TIMEOUT",
    "PageResponse",
    "WorkerSums",
    "WorkersResource",
    "fetchMetrics",
    "httpGet",
]

WORKER_SCRAPE_TIMEOUT = 2.0
"""
Seconds the supervisor waits for a worker's page before it leaves that
worker out of the scrape (and counts it unreachable).
"""

MAX_PAGE_BYTES = 16 * 1024 * 1024
"""
The largest response taken from a worker.
"""

_MONOTONIC = frozenset({"counter", "histogram", "summary"})

_Key = tuple[str, tuple[tuple[str, str], ...]]
_Values = dict[str, dict[_Key, float]]


def _addInto(total: _Values, values: _Values) -> None:
    for family, samples in values.items():
        into = total.setdefault(family, {})
        for key, value in samples.items():
            into[key] = into.get(key, 0.0) + value


class WorkerSums:
    """
    Add up the metrics pages of several workers, scrape after scrape.

    Each sample (a gauge, a counter, a histogram's buckets, sum and count)
    is summed over the workers by name and labels.  Gauges count the
    workers that answered this time only.  Counters and histograms count,
    for a worker that did not answer, the values it had last time; and for
    a worker replaced by a new process (a restart), what the old one had
    counted, for good.  C{process_...} metrics (each process's own) are
    left out.
    """

    def __init__(self) -> None:
        self._kinds: dict[str, tuple[str, str, str]] = {}
        self._last: dict[int, tuple[int, _Values]] = {}
        self._retired: _Values = {}

    def add(self, pages: Mapping[tuple[int, int], str | None]) -> list[Metric]:
        """
        The sums, given this scrape's pages.

        @param pages: Each worker's page (C{None} if it did not answer), by
            its slot number and process ID.
        @raise ValueError: If a page cannot be parsed.
        """
        gauges: _Values = {}
        parsed: dict[tuple[int, int], _Values] = {}
        for worker, page in pages.items():
            if page is not None:
                parsed[worker] = self._parse(page, gauges)
        for (slot, pid), monotonic in parsed.items():
            previous = self._last.get(slot)
            if previous is not None and previous[0] != pid:
                _addInto(self._retired, previous[1])
            self._last[slot] = (pid, monotonic)
        totals: _Values = {}
        _addInto(totals, self._retired)
        for _, values in self._last.values():
            _addInto(totals, values)
        _addInto(totals, gauges)
        families = []
        for name, (documentation, kind, unit) in self._kinds.items():
            if name not in totals:
                continue
            family = Metric(name, documentation, kind, unit)
            for (sampleName, labels), value in totals[name].items():
                family.add_sample(sampleName, dict(labels), value)
            families.append(family)
        return families

    def _parse(self, page: str, gauges: _Values) -> _Values:
        """
        Add C{page}'s gauges to C{gauges}; return its other samples.
        """
        monotonic: _Values = {}
        for family in text_string_to_metric_families(page):
            if family.name.startswith("process_"):
                continue
            self._kinds.setdefault(
                family.name, (family.documentation, family.type, family.unit)
            )
            values = monotonic if family.type in _MONOTONIC else gauges
            into = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                into[key] = into.get(key, 0.0) + sample.value
        return monotonic


def _abort(protocol: Protocol) -> None:
    cast(ITCPTransport, protocol.transport).abortConnection()


@dataclass(frozen=True)
class PageResponse:
    """
    What an HTTP server answered.

    @ivar status: The status code.
    @ivar headers: The header fields, by lowercase name (the last of each).
    @ivar body: The body.
    """

    status: int
    headers: dict[bytes, bytes]
    body: bytes


class _PageFetch(Protocol):
    """
    Send an HTTP/1.0 C{GET} (the server closes after its response) and give
    the response to C{done}.
    """

    def __init__(self, done: Deferred[PageResponse], path: bytes) -> None:
        self._done = done
        self._path = path
        self._received: list[bytes] = []
        self._size = 0

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(
            b"GET " + self._path + b" HTTP/1.0\r\nHost: tcpcomm\r\n\r\n"
        )

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_PAGE_BYTES:
            self._fail(ValueError(f"response over {MAX_PAGE_BYTES} bytes"))
            _abort(self)
            return
        self._received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        head, _, body = b"".join(self._received).partition(b"\r\n\r\n")
        statusLine, *fields = head.split(b"\r\n")
        status = statusLine.split(b" ")
        if (
            len(status) < 2
            or not status[0].startswith(b"HTTP/")
            or not status[1].isdigit()
        ):
            self._fail(ValueError(f"not an HTTP response: {head[:40]!r}"))
            return
        headers = {}
        for field in fields:
            name, _, value = field.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if not self._done.called:
            self._done.callback(PageResponse(int(status[1]), headers, body))

    def _fail(self, error: Exception) -> None:
        if not self._done.called:
            self._done.errback(Failure(error))


class _FetchFactory(Factory):
    noisy = False

    def __init__(self, done: Deferred[PageResponse], path: bytes) -> None:
        self._done = done
        self._path = path

    def buildProtocol(self, addr: object) -> Protocol:
        protocol = _PageFetch(self._done, self._path)
        protocol.factory = self
        return protocol


def httpGet(
    reactor: Any,
    endpoint: IStreamClientEndpoint,
    path: bytes = b"/metrics",
    timeout: float = WORKER_SCRAPE_TIMEOUT,
) -> Deferred[PageResponse]:
    """
    Get C{path} with HTTP/1.0 from the web server at C{endpoint}.

    @return: The response; or a failure, if it did not come within
        C{timeout} seconds, was not HTTP or was larger than
        L{MAX_PAGE_BYTES}.
    """
    connected: list[Protocol] = []

    def cancel(_: Deferred[PageResponse]) -> None:
        connecting.cancel()
        for protocol in connected:
            _abort(protocol)

    done: Deferred[PageResponse] = Deferred(cancel)
    connecting = endpoint.connect(_FetchFactory(done, path))

    def failed(failure: Failure) -> None:
        if not done.called:
            done.errback(failure)

    connecting.addCallbacks(connected.append, failed)
    done.addTimeout(timeout, reactor)
    return done


def fetchMetrics(
    reactor: Any, path: str, timeout: float = WORKER_SCRAPE_TIMEOUT
) -> Deferred[str]:
    """
    Fetch C{/metrics} from the server on the UNIX socket C{path}.

    @return: The page; or a failure, as L{httpGet}'s or for a status other
        than 200.
    """

    def page(response: PageResponse) -> str:
        if response.status != 200:
            raise ValueError(f"HTTP status {response.status}")
        return response.body.decode("utf-8")

    endpoint = UNIXClientEndpoint(reactor, path, timeout=timeout)
    return httpGet(reactor, endpoint, timeout=timeout).addCallback(page)


class _Given(Collector):
    """
    Metrics computed already.
    """

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Any:
        return iter(self._families)


Worker = tuple[int, int, str]
"""
A running worker: its slot number, process ID and metrics socket.
"""


class WorkersResource(MetricsResource):
    """
    The supervisor's C{GET /metrics}: every worker's page, fetched when
    scraped and summed (L{WorkerSums}), how many workers there are and
    how many answered, and the supervisor's own C{process_...} metrics.
    A worker that does not answer within C{timeout} is logged and left out.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        workers: int,
        running: Callable[[], Sequence[Worker]],
        timeout: float = WORKER_SCRAPE_TIMEOUT,
    ) -> None:
        """
        @param workers: How many workers the server runs.
        @param running: The workers running now.
        """
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        super().__init__(registry)
        self._reactor = reactor
        self._workers = workers
        self._running = running
        self._timeout = timeout
        self._sums = WorkerSums()

    def page(self, request: Request) -> bytes | int:
        running = list(self._running())
        fetches = [
            fetchMetrics(self._reactor, path, self._timeout).addErrback(
                self._unreachable, path
            )
            for _, _, path in running
        ]
        gone: list[object] = []
        request.notifyFinish().addBoth(gone.append)
        gathered: Deferred[list[str | None]] = gatherResults(fetches)
        gathered.addCallback(self._respond, running, request, gone)
        gathered.addErrback(self._failed, request, gone)
        return NOT_DONE_YET

    def _unreachable(self, failure: Failure, path: str) -> None:
        if failure.check(TimeoutError):
            reason = f"no answer within {self._timeout:g} s"
        else:
            reason = failure.getErrorMessage() or repr(failure.value)
        self._log.warn(
            "Worker metrics at {path} unavailable: {reason}", path=path, reason=reason
        )

    def _respond(
        self,
        pages: list[str | None],
        running: list[Worker],
        request: Request,
        gone: list[object],
    ) -> None:
        families = self._sums.add(
            {
                (slot, pid): page
                for (slot, pid, _), page in zip(running, pages, strict=True)
            }
        )
        up = sum(page is not None for page in pages)
        for name, documentation, value in [
            (
                "tcpcomm_workers",
                "Worker processes the server runs (--workers).",
                self._workers,
            ),
            ("tcpcomm_workers_up", "Workers whose metrics this scrape has.", up),
            (
                "tcpcomm_workers_unreachable",
                "Workers left out of this scrape's gauges: not running, or not"
                f" answering within {self._timeout:g} s.",
                self._workers - up,
            ),
        ]:
            families.append(GaugeMetricFamily(name, documentation, value=value))
        summed = CollectorRegistry(auto_describe=False)
        summed.register(_Given(families))
        body = generate_latest(summed) + generate_latest(self.registry)
        if gone:  # the scraper hung up
            return
        request.write(body)
        request.finish()

    def _failed(self, failure: Failure, request: Request, gone: list[object]) -> None:
        self._log.failure("Cannot sum the workers' metrics", failure)
        if gone:
            return
        request.setResponseCode(500)
        request.write(b"cannot sum the workers' metrics\n")
        request.finish()
