"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_MAX_CACHED = 10_000
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The daemon's counters, histograms and gauges.

    - ``plughub_http_requests_total{method,route,status}`` and
      ``plughub_http_request_duration_seconds{method,route}``: ``route`` is the route's path
      template (``/v1/plugins/{author}/{name}``), ``unmatched`` for unknown paths, so labels stay
      bounded whatever clients send;
    - ``plughub_http_requests_in_flight``;
    - ``plughub_tool_calls_total{plugin,outcome}``: ``outcome`` is ``ok``, the result's reason
      code (``tool_error``, ``timeout``...) or ``cancelled`` (the client went away);
    - ``plughub_tool_call_duration_seconds{plugin}`` and ``plughub_tool_calls_in_flight``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "plughub_http_requests",
            "HTTP requests by route template and status.",
            ("method", "route", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "plughub_http_request_duration_seconds",
            "Time to complete an HTTP request (a stream counts until its end).",
            ("method", "route"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "plughub_http_requests_in_flight", "HTTP requests being served.", registry=r
        )
        self.tool_calls = Counter(
            "plughub_tool_calls",
            "Tool calls by plugin and outcome.",
            ("plugin", "outcome"),
            registry=r,
        )
        self.tool_latency = Histogram(
            "plughub_tool_call_duration_seconds",
            "Time a tool call took, as the daemon saw it.",
            ("plugin",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_calls_in_flight = Gauge(
            "plughub_tool_calls_in_flight", "Tool calls running now.", registry=r
        )
        # Label children by label values: ``labels()`` validates and locks on every call, a
        # measurable share of a trivial request. Children are never removed, so they stay valid.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._call_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            if len(self._request_children) < _MAX_CACHED:
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_call(self, plugin: str, outcome: str, seconds: float) -> None:
        key = (plugin, outcome)
        children = self._call_children.get(key)
        if children is None:
            children = (self.tool_calls.labels(plugin, outcome), self.tool_latency.labels(plugin))
            if len(self._call_children) < _MAX_CACHED:
                self._call_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
