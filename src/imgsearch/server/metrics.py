"""Prometheus metrics of one app instance (own registry, so several apps in one process do not collide)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, index_size: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter("imgsearch_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("imgsearch_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.search_stage = Histogram("imgsearch_search_stage_seconds", "Time per search stage", ["stage"],
                                      buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
                                      registry=self.registry)
        self.index_size = Gauge("imgsearch_index_images", "Images in the served collection", registry=self.registry)
        self.index_size.set_function(index_size)
