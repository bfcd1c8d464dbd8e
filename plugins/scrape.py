"""The `scrape` metrics provider: reads each slot's own /metrics, no Prometheus server needed.

At the start of a window it scrapes every endpoint of the slot; at the end it scrapes again and
reports the difference: requests, 5xx responses and the latency histogram (cumulative buckets),
summed over endpoints. A counter that went down (the process restarted) counts from zero. A
series that does not exist yet (no 5xx so far) is zero, not "no data".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel, ConfigDict, Field
from prometheus_client.parser import text_string_to_metric_families

import turnout
from turnout.config import Environment
from turnout.errors import BackendError
from turnout.interfaces import Registration
from turnout.metrics import SlotMetrics

NAME = "scrape"


class ScrapeConfig(BaseModel):
    """`[metrics]` settings for `kind = "scrape"`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field("/metrics", description="Where each slot endpoint serves Prometheus text.")
    requests_metric: str = Field("http_requests_total", description="Counter of requests, with a status label.")
    status_labels: list[str] = Field(default_factory=lambda: ["code", "status"], description="The status label's name(s).")
    duration_metric: str = Field("http_request_duration_seconds", description="Latency histogram (seconds).")
    timeout: float = Field(2.0, gt=0, description="Seconds per scrape.")


@dataclass
class _Snapshot:
    at: float
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)


class ScrapeProvider:
    """Counter deltas between two scrapes of the slot's endpoints."""

    def __init__(self, config: ScrapeConfig, environment: Environment):
        self.config = config
        self._start: dict[str, dict[str, _Snapshot]] = {}

    def validate(self) -> None:
        """Nothing to check before traffic: the names are only known when the service answers."""

    def _scrape(self, endpoint: str, client: httpx.Client) -> _Snapshot:
        url = f"http://{endpoint}{self.config.path}"
        try:
            r = client.get(url)
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise BackendError(f"scrape of {url} failed: {type(e).__name__}: {e}") from e
        snap = _Snapshot(at=time.monotonic())
        req, dur = self.config.requests_metric, self.config.duration_metric
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                if s.name == req:
                    snap.requests += s.value
                    status = next((s.labels[k] for k in self.config.status_labels if k in s.labels), "")
                    if status.startswith("5"):
                        snap.errors += s.value
                elif s.name == dur + "_bucket":
                    le = float(s.labels["le"])
                    snap.buckets[le] = snap.buckets.get(le, 0.0) + s.value
        return snap

    def _scrape_all(self, endpoints: list[str]) -> dict[str, _Snapshot]:
        with httpx.Client(timeout=self.config.timeout, headers={"Connection": "close"}) as client:
            return {ep: self._scrape(ep, client) for ep in endpoints}

    def begin(self, slot: str, endpoints: list[str]) -> None:
        """Remember the counters now."""
        self._start[slot] = self._scrape_all(endpoints)

    def measure(self, slot: str, endpoints: list[str]) -> SlotMetrics:
        """Counters now minus counters at `begin` (a reset counts from zero)."""
        start = self._start.get(slot)
        if start is None:
            raise BackendError(f"scrape: measure({slot}) without begin()")
        end = self._scrape_all(endpoints)
        requests = errors = 0.0
        buckets: dict[float, float] = {}
        windows = []
        for ep, e in end.items():
            s = start.get(ep, _Snapshot(at=e.at))
            reset = e.requests < s.requests
            base = _Snapshot(at=s.at) if reset else s
            requests += e.requests - base.requests
            errors += e.errors - base.errors
            for le, count in e.buckets.items():
                buckets[le] = buckets.get(le, 0.0) + count - (0.0 if reset else s.buckets.get(le, 0.0))
            windows.append(e.at - s.at)
        self._start[slot] = end  # the next window starts where this one ended
        cumulative = sorted(buckets.items())
        if cumulative and not math.isinf(cumulative[-1][0]):
            cumulative.append((math.inf, cumulative[-1][1]))
        return SlotMetrics(slot=slot, window=max(windows, default=0.0), requests=requests, errors=max(errors, 0.0),
                           buckets=cumulative,
                           source={"kind": NAME, "urls": [f"http://{ep}{self.config.path}" for ep in endpoints]})


@turnout.hookimpl
def register_metrics_providers():
    """The scrape provider."""
    return [Registration(NAME, ScrapeConfig, ScrapeProvider, "each slot's own /metrics, no server needed")]
