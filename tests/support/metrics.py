"""Scraping a component's /metrics in tests: over HTTP, read with prometheus_client's text
parser (the format Prometheus itself reads)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

Samples = dict[str, list[Sample]]


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """Every sample on http://`host`:`port`/metrics, by metric family name."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum of the samples called `metric` (a counter's `_total`, a histogram's `_count`)
    whose labels include `labels`; 0 when there is none."""
    return sum(
        s.value
        for family in samples.values()
        for s in family
        if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
    )
