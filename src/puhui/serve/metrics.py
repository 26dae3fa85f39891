"""Prometheus metrics of one server (a registry per app, so that several apps in one process keep apart).

    puhui_requests_total{endpoint, method, status}      every answered request
    puhui_request_errors_total{endpoint, status}        those with a 4xx/5xx status
    puhui_request_duration_seconds{endpoint}            until the last byte of the answer (a stream's end)
    puhui_requests_in_progress                          being answered now
    puhui_queue_depth{model}                            sequences (or embedding calls) waiting
    puhui_running_sequences{model}                      the running batch size
    puhui_rejected_total{model}                         429s for a full queue
    puhui_prompt_tokens_total{model} / puhui_generated_tokens_total{model}
    puhui_time_to_first_token_seconds{model}            from admission to the first generated token
"""
from __future__ import annotations

import time

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

disable_created_metrics()   # the *_created series say nothing a scraper needs

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("puhui_requests", "Answered HTTP requests.", ["endpoint", "method", "status"],
                                registry=r)
        self.errors = Counter("puhui_request_errors", "Answered HTTP requests with a 4xx or 5xx status.",
                              ["endpoint", "status"], registry=r)
        self.duration = Histogram("puhui_request_duration_seconds", "Time to answer a request, to its last byte.",
                                  ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_progress = Gauge("puhui_requests_in_progress", "Requests being answered.", registry=r)
        self.queue_depth = Gauge("puhui_queue_depth", "Sequences or embedding calls waiting.", ["model"], registry=r)
        self.running = Gauge("puhui_running_sequences", "Sequences in the running batch.", ["model"], registry=r)
        self.rejected = Counter("puhui_rejected", "Requests refused with 429: queue full.", ["model"], registry=r)
        self.prompt_tokens = Counter("puhui_prompt_tokens", "Prompt tokens admitted.", ["model"], registry=r)
        self.generated_tokens = Counter("puhui_generated_tokens", "Tokens generated.", ["model"], registry=r)
        self.time_to_first_token = Histogram("puhui_time_to_first_token_seconds",
                                             "From admission to the first generated token.", ["model"],
                                             buckets=LATENCY_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every request by its route (not its raw path: unknown paths are 'other') and status, and times
    it to the end of the response body."""

    def __init__(self, app, metrics: Metrics, routes=()):
        self.app = app
        self.metrics = metrics
        self.routes = routes      # to name the route of a request answered before routing (401, 413)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        m = self.metrics
        start = time.perf_counter()
        status = 500
        m.in_progress.inc()

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m.in_progress.dec()
            endpoint = getattr(scope.get("route"), "path", None) or self._endpoint(scope)
            m.requests.labels(endpoint, scope.get("method", ""), str(status)).inc()
            if status >= 400:
                m.errors.labels(endpoint, str(status)).inc()
            m.duration.labels(endpoint).observe(time.perf_counter() - start)

    def _endpoint(self, scope) -> str:
        from starlette.routing import Match

        for route in self.routes:
            try:
                if route.matches(scope)[0] is Match.FULL:
                    return route.path
            except Exception:  # noqa: BLE001 - a label is not worth an error
                break
        return "other"
