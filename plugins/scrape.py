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
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

import turnout
from turnout.config import Environment
from turnout.errors import BackendError, ConfigError
from turnout.health import http_client
from turnout.interfaces import Registration
from turnout.metrics import SlotMetrics

NAME = "scrape"


class ScrapeConfig(BaseModel):
    """`[metrics]` settings for `kind = "scrape"`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field("/metrics", description="Where each slot endpoint serves Prometheus text.")
    requests_metric: str = Field("http_requests_total", description="Counter of requests, with a status label.")
    status_labels: list[str] = Field(
        default_factory=lambda: ["code", "status"], description="The status label's name(s)."
    )
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
        try:
            families = list(text_string_to_metric_families(r.text))
        except Exception as e:  # the parser raises ValueError, IndexError, ... on garbage
            raise BackendError(f"{url} is not Prometheus text: {type(e).__name__}: {e}") from e
        for family in families:
            for s in family.samples:
                if s.name == req:
                    snap.requests += s.value
                    status = next((s.labels[k] for k in self.config.status_labels if k in s.labels), "")
                    if status.startswith("5"):
                        snap.errors += s.value
                elif s.name == dur + "_bucket":
                    try:
                        le = float(s.labels["le"])
                    except (KeyError, ValueError):
                        raise BackendError(f"{url}: {s.name} has a sample without a numeric le label") from None
                    snap.buckets[le] = snap.buckets.get(le, 0.0) + s.value
        return snap

    def check_series(self, slot: str, endpoints: list[str], fresh: bool = False) -> None:
        """Every endpoint exposes the requests counter (with a status label) and the duration histogram."""
        with http_client(self.config.timeout, headers={"Connection": "close"}) as client:
            for ep in endpoints:
                url = f"http://{ep}{self.config.path}"
                try:
                    r = client.get(url)
                    r.raise_for_status()
                    families = {f.name: f for f in text_string_to_metric_families(r.text)}
                except Exception as e:
                    raise ConfigError(
                        f"metrics: slot {slot} does not serve Prometheus text at {url}: {type(e).__name__}: {e}"
                    ) from None
                problems = []
                req = families.get(self.config.requests_metric.removesuffix("_total"))
                if req is None or req.type != "counter":
                    problems.append(f"no counter {self.config.requests_metric} (metrics.requests_metric)")
                elif req.samples and not any(k in smp.labels for smp in req.samples for k in self.config.status_labels):
                    problems.append(
                        f"{self.config.requests_metric} has none of the status labels "
                        f"{self.config.status_labels} (metrics.status_labels); its labels: "
                        f"{sorted({k for smp in req.samples for k in smp.labels})}"
                    )
                dur = families.get(self.config.duration_metric)
                if dur is None or dur.type != "histogram":
                    problems.append(f"no histogram {self.config.duration_metric} (metrics.duration_metric)")
                if problems:
                    found = sorted(
                        f"{f.name} ({f.type})" for f in families.values() if f.type in ("counter", "histogram")
                    )
                    raise ConfigError(
                        f"metrics: slot {slot} at {url}: "
                        + "; ".join(problems)
                        + f". It exposes: {', '.join(found[:12]) or 'no counters or histograms'}"
                    )

    def _scrape_all(self, endpoints: list[str]) -> dict[str, _Snapshot]:
        with http_client(self.config.timeout, headers={"Connection": "close"}) as client:
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
        return SlotMetrics.measured(
            slot=slot,
            window=max(windows, default=0.0),
            requests=requests,
            errors=max(errors, 0.0),
            buckets=cumulative,
            source={"kind": NAME, "urls": [f"http://{ep}{self.config.path}" for ep in endpoints]},
        )


@turnout.hookimpl
def register_metrics_providers():
    """The scrape provider."""
    return [Registration(NAME, ScrapeConfig, ScrapeProvider, "each slot's own /metrics, no server needed")]
