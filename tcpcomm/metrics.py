# -*- test-case-name: tests.test_metrics -*-
"""
C{--metrics ENDPOINT}: the server's counters for Prometheus, at C{GET
/metrics} in Prometheus's text format (version 0.0.4).

The counters are the ones the server keeps anyway (L{ServerStats}, a relay's
L{RelayStats} and queue, a chat's room): L{ServerCollector} reads them when
Prometheus scrapes, so serving metrics costs the connections nothing.  The
one thing measured for metrics alone is how long handlers that answer later
take (two clock readings per such handler, none for handlers that answer at
once), and only while metrics are served.  The
page is rendered in the reactor thread by L{MetricsResource} (not
C{prometheus_client.twisted.MetricsResource}, which is WSGI on a thread
pool).

With C{--workers N} each worker serves its own page on a private UNIX
socket, and the supervisor's C{/metrics} sums them (L{tcpcomm.workermetrics}).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from twisted.web import http
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from tcpcomm.chat import ChatFactory
from tcpcomm.connection import ConnectionFactory
from tcpcomm.line import LineFactory
from tcpcomm.relay import RelayFactory
from tcpcomm.stats import HandlerLatency

__all__ = [
    "CONTENT_TYPE",
    "KNOWN_REFUSALS",
    "MetricsResource",
    "ServerCollector",
    "metricsSite",
    "serverRegistry",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""
The content type of the page: Prometheus's text format, version 0.0.4.
"""

KNOWN_REFUSALS = ("max_connections", "max_connections_per_ip", "connection_rate")
"""
The C{reason} labels of refused connections, shown (at 0) before any
refusal so that their series exist from the start.
"""

_HANDLER_LATENCY_HELP = (
    "Seconds from a handler's call to its reply, for handlers that answer"
    " later (a Deferred, or a coroutine that waits), timed by the reactor's"
    " clock.  Handlers that answer at once are counted as 0 s without being"
    " timed, so that the usual path pays nothing: a handler that blocks the"
    " reactor shows in every client's latency, not here."
)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class ServerCollector(Collector):
    """
    Read a factory's counters when scraped, as Prometheus metrics named
    C{tcpcomm_...}.
    """

    def __init__(self, factory: ConnectionFactory) -> None:
        """
        Read C{factory}'s counters, and from now on time its handlers that
        answer later (L{HandlerLatency}).
        """
        self.factory = factory
        stats = factory.stats
        if isinstance(factory, LineFactory) and stats.handlerLatency is None:
            stats.handlerLatency = HandlerLatency(stats.linesHandled)

    def collect(self) -> Iterator[Metric]:
        """
        Every metric, with the values they have now.
        """
        stats = self.factory.stats
        yield _gauge(
            "tcpcomm_connections_open",
            "Client connections open now.",
            stats.connectionsOpen,
        )
        yield _counter(
            "tcpcomm_connections_total",
            "Client connections accepted (refused ones not counted).",
            stats.connectionsTotal,
        )
        yield _counter(
            "tcpcomm_connections_refused_total",
            "Client connections refused, for every reason.",
            stats.connectionsRefused,
        )
        refusals = CounterMetricFamily(
            "tcpcomm_refusals_total",
            "Client connections refused, by the limit they were over.",
            labels=["reason"],
        )
        for reason in sorted({*KNOWN_REFUSALS, *stats.refusals}):
            refusals.add_metric([reason], stats.refusals.get(reason, 0))
        yield refusals
        yield _counter(
            "tcpcomm_received_bytes_total",
            "Bytes received from clients.",
            stats.bytesIn,
        )
        yield _counter(
            "tcpcomm_sent_bytes_total", "Bytes sent to clients.", stats.bytesOut
        )
        yield _counter(
            "tcpcomm_messages_handled_total",
            "Messages (lines or frames) received from clients and handled.",
            stats.linesHandled,
        )
        yield _counter(
            "tcpcomm_handler_errors_total",
            "Messages whose handler raised, failed or returned a bad reply.",
            stats.handlerErrors,
        )
        yield _counter(
            "tcpcomm_handler_timeouts_total",
            "Messages whose handler took longer than --handler-timeout.",
            stats.handlerTimeouts,
        )
        yield _counter(
            "tcpcomm_idle_timeouts_total",
            "Connections closed for being idle longer than --idle-timeout.",
            stats.idleTimeouts,
        )
        yield _counter(
            "tcpcomm_too_slow_total",
            "Connections dropped for reading too slowly (--max-pending-bytes).",
            stats.tooSlow,
        )
        yield _counter(
            "tcpcomm_bad_frames_total",
            "Connections closed for input their framing cannot cut (a corrupt"
            " or oversized frame).",
            stats.badFrames,
        )
        yield _counter(
            "tcpcomm_read_pauses_total",
            "Times reading from a connection was paused (flow control): its peer"
            " read too slowly, or its handlers or the relay's upstream lagged.",
            stats.readPauses,
        )
        yield _counter(
            "tcpcomm_tls_handshake_failures_total",
            "TLS handshakes that failed or were cut off.",
            stats.tlsHandshakeFailures,
        )
        yield _counter(
            "tcpcomm_tls_handshake_timeouts_total",
            "Connections closed for not finishing their TLS handshake in time.",
            stats.tlsHandshakeTimeouts,
        )
        yield _counter(
            "tcpcomm_proxy_header_errors_total",
            "Connections closed for a PROXY protocol header that was malformed"
            " or late.",
            stats.proxyHeaderErrors,
        )
        yield _gauge(
            "tcpcomm_unfinished_bytes",
            "Bytes held now in partial lines or frames, across all connections.",
            stats.unfinishedBytes,
        )
        if stats.unfinishedBudget is not None:
            yield _gauge(
                "tcpcomm_unfinished_budget_bytes",
                "The most bytes all connections may hold in partial lines or"
                " frames (the unfinished-frame budget).",
                stats.unfinishedBudget,
            )
        yield _counter(
            "tcpcomm_budget_closes_total",
            "Connections closed for holding the most when the unfinished-frame"
            " budget was spent.",
            stats.budgetCloses,
        )
        factory = self.factory
        if isinstance(factory, RelayFactory):
            yield from self._relay(factory)
        elif isinstance(factory, ChatFactory):
            yield _gauge(
                "tcpcomm_chat_members",
                "Clients in the chat room now.",
                len(factory.room.members),
            )
        elif stats.handlerLatency is not None:
            yield self._latency(stats.handlerLatency)

    def _latency(self, latency: HandlerLatency) -> HistogramMetricFamily:
        """
        The handler latency histogram: the timed handlers' buckets, each
        with the untimed ones (answered at once) added as 0 s.
        """
        handled = self.factory.stats.linesHandled - latency.handledBefore
        atOnce = max(0, handled - latency.started)
        buckets: list[tuple[str, float]] = []
        running = atOnce
        for bound, count in zip(latency.bounds, latency.counts, strict=False):
            running += count
            buckets.append((repr(float(bound)), running))
        running += latency.counts[-1]
        buckets.append(("+Inf", running))
        return HistogramMetricFamily(
            "tcpcomm_handler_latency_seconds",
            _HANDLER_LATENCY_HELP,
            buckets=buckets,
            sum_value=latency.total,
        )

    def _relay(self, factory: RelayFactory) -> Iterator[Metric]:
        relay = factory.relayStats
        yield _gauge(
            "tcpcomm_relay_upstream_connected",
            "Whether the relay is connected to its upstream (1) or not (0).",
            int(factory.upstreamConnected),
        )
        yield _counter(
            "tcpcomm_relay_upstream_connections_total",
            "Connections made to the upstream (the first and every reconnection).",
            relay.upstreamConnections,
        )
        yield _gauge(
            "tcpcomm_relay_queue_messages",
            "Messages waiting for the upstream now.",
            factory.queuedLines,
        )
        yield _gauge(
            "tcpcomm_relay_queue_bytes",
            "Bytes of messages waiting for the upstream now.",
            factory.queuedBytes,
        )
        yield _gauge(
            "tcpcomm_relay_queue_limit_messages",
            "The most messages that may wait for the upstream (--queue-limit).",
            factory.queueLimit,
        )
        yield _gauge(
            "tcpcomm_relay_queue_limit_bytes",
            "The most bytes of messages that may wait for the upstream"
            " (--queue-bytes).",
            factory.queueBytes,
        )
        for name, value, documentation in [
            ("forwarded", relay.forwarded, "Messages sent to the upstream."),
            ("queued", relay.queued, "Messages that waited in the queue first."),
            (
                "refused",
                relay.refused,
                "Messages refused because the queue was full (ERROR upstream"
                " unavailable).",
            ),
            (
                "dropped",
                relay.dropped,
                "Queued messages thrown away when the relay stopped without an"
                " upstream.",
            ),
            ("received", relay.received, "Messages received from the upstream."),
            (
                "delivered",
                relay.delivered,
                "Messages from the upstream written to clients (once per client).",
            ),
            (
                "undeliverable",
                relay.undeliverable,
                "Messages from the upstream whose tag named no connected client.",
            ),
        ]:
            yield _counter(f"tcpcomm_relay_{name}_messages_total", documentation, value)


def serverRegistry(factory: ConnectionFactory) -> CollectorRegistry:
    """
    A registry of C{factory}'s metrics and this process's (memory, CPU,
    open files: C{process_...}).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(factory))
    ProcessCollector(registry=registry)
    return registry


def _notFound(request: Request) -> bytes:
    rendered: bytes = _NOT_FOUND.render(request)
    return rendered


_NOT_FOUND = notFound("No Such Resource", "Metrics are at /metrics.")


class MetricsResource(Resource):
    """
    C{GET /metrics}: a registry's metrics in Prometheus's text format,
    rendered in the reactor thread; anything below it is not found.

    @ivar registry: The metrics shown.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes | int:
        if request.postpath not in ([], [b""]):
            return _notFound(request)
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        return self.page(request)

    def page(self, request: Request) -> bytes | int:
        """
        The page's body, or C{NOT_DONE_YET} for one that C{request} is
        given later (L{tcpcomm.workermetrics.WorkersResource}).
        """
        page: bytes = generate_latest(self.registry)
        return page


class _Root(Resource):
    """
    The site's root: C{/metrics}, and nothing else.
    """

    def __init__(self, metrics: Resource) -> None:
        super().__init__()
        self.putChild(b"metrics", metrics)

    def getChild(self, path: bytes, request: Request) -> IResource:
        return _NOT_FOUND

    def render(self, request: Request) -> bytes:
        return _notFound(request)


class MetricsSite(Site):
    """
    A site that writes no access log line per scrape, nor a line when it
    starts and stops.
    """

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


def metricsSite(metrics: Resource) -> Site:
    """
    The metrics web site: C{metrics} at C{/metrics}, 404 elsewhere; idle
    connections are closed after a minute.
    """
    return MetricsSite(_Root(metrics), timeout=60)
