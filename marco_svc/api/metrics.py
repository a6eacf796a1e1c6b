"""GET /metrics for Prometheus: request latency (this process), and from the database (so
every process tells the same): images by status, scores, scoring latency of the latest
1,000 scores, and the scoring queue of this process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from marco_svc.api.access import Permission, guarded
from marco_svc.api.params import ApiBlueprint
from marco_svc.db.models import Image, ImageStatus, Score
from marco_svc.service import Service

blueprint = ApiBlueprint("metrics", __name__, description="Prometheus metrics")
LATENCY_SAMPLE = 1000


class _DatabaseCollector(Collector):
    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        runtime = self.service.runtime
        with runtime.db.session() as session:
            statuses = dict(
                session.execute(select(Image.status, func.count()).group_by(Image.status)).all()
            )
            scores = session.scalar(select(func.count()).select_from(Score)) or 0
            latencies = sorted(
                value
                for value in session.scalars(
                    select(Score.latency_ms).order_by(Score.feed_seq.desc()).limit(LATENCY_SAMPLE)
                )
                if value is not None
            )
        images = GaugeMetricFamily("marco_images", "Stored images by status", labels=["status"])
        for status in ImageStatus:
            images.add_metric([status.value], statuses.get(status.value, 0))
        yield images
        yield GaugeMetricFamily("marco_scores", "Stored scores (all model versions)", value=scores)
        yield GaugeMetricFamily(
            "marco_scoring_queue_depth",
            "Images waiting in this process's scoring queue",
            value=len(runtime.scoring_queue),
        )
        quantiles = GaugeMetricFamily(
            "marco_scoring_latency_ms",
            f"Model time per image over the latest {LATENCY_SAMPLE} scores",
            labels=["quantile"],
        )
        for q in (0.5, 0.9, 0.99):
            value = latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0
            quantiles.add_metric([str(q)], value)
        yield quantiles


class Metrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, app: Flask, service: Service) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "marco_http_request_seconds",
            "HTTP request latency",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(service))
        app.before_request(self._start)
        app.after_request(self._observe)

    @staticmethod
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    def _observe(self, response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            self.requests.labels(
                request.method, request.endpoint or "unmatched", str(response.status_code)
            ).observe(time.perf_counter() - started)
        return response

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@blueprint.route("/metrics")
@guarded(blueprint, Permission.READ)
@blueprint.response(200, {"type": "string"}, content_type=CONTENT_TYPE_LATEST)
def metrics() -> Response:
    """Prometheus text exposition (scrape with a lims or admin token)."""
    from flask import current_app

    body = current_app.extensions["marco-metrics"].exposition()
    return Response(body, content_type=CONTENT_TYPE_LATEST)
