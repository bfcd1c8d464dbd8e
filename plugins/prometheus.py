"""The `prometheus` metrics provider: PromQL through `prometheus-api-client`.

Each signal is a PromQL template an environment may override; `$slot`, `$release` and `$window`
(e.g. `37s`) are replaced before the query runs. The defaults assume the service's metrics carry a
`slot` label (the demo service's do) — `http_requests_total{code}` and
`http_request_duration_seconds_bucket`. Quirks handled:

- a series that does not exist yet (no 5xx so far) returns no result: that is 0, not "no data";
- every template is run once by `validate()` before any traffic moves, so a query Prometheus
  rejects (HTTP 400) is a configuration error naming the template;
- Prometheus down or slow during a measurement raises BackendError: the measurement is an
  *error*, which aborts after its limit and never promotes.
"""

from __future__ import annotations

import math
import time

from pydantic import BaseModel, ConfigDict, Field

import turnout
from turnout.config import Environment
from turnout.errors import BackendError, ConfigError
from turnout.interfaces import Registration
from turnout.metrics import SlotMetrics

NAME = "prometheus"


class PromQLTemplates(BaseModel):
    """One PromQL template per signal; `$slot`, `$release`, `$window` are substituted."""

    model_config = ConfigDict(extra="forbid")

    requests: str = 'sum(increase(http_requests_total{slot="$slot"}[$window]))'
    errors: str = 'sum(increase(http_requests_total{slot="$slot",code=~"5.."}[$window]))'
    latency_buckets: str = 'sum by (le) (increase(http_request_duration_seconds_bucket{slot="$slot"}[$window]))'


class PrometheusConfig(BaseModel):
    """`[metrics]` settings for `kind = "prometheus"`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(..., description="Prometheus base URL, e.g. http://127.0.0.1:9090")
    timeout: float = Field(5.0, gt=0, description="Seconds per query.")
    window_margin: float = Field(2.0, ge=0, description="Seconds added to each window: about two scrape "
                                 "intervals, so the samples around the window's start are inside it.")
    queries: PromQLTemplates = Field(default_factory=PromQLTemplates)


class PrometheusProvider:
    """Instant queries over the window since `begin`."""

    def __init__(self, config: PrometheusConfig, environment: Environment):
        self.config = config
        self._start: dict[str, float] = {}

    def _query(self, template: str, slot: str, window: str) -> list[dict]:
        import requests
        from prometheus_api_client import PrometheusApiClientException

        query = template.replace("$slot", slot).replace("$window", window).replace("$release", "")
        try:
            return self._client().custom_query(query, params={"timeout": f"{self.config.timeout:g}s"})
        except PrometheusApiClientException as e:
            if "400" in str(e) or "bad_data" in str(e):
                raise ConfigError(f"metrics.queries: Prometheus rejects {query!r}: {e}") from e
            raise BackendError(f"Prometheus query {query!r} failed: {e}") from e
        except requests.RequestException as e:
            raise BackendError(f"Prometheus at {self.config.url} did not answer: {type(e).__name__}") from e

    def _client(self):
        from prometheus_api_client import PrometheusConnect

        if not hasattr(self, "_pc"):
            self._pc = PrometheusConnect(url=self.config.url, disable_ssl=True)
        return self._pc

    @staticmethod
    def _scalar(result: list[dict]) -> float:
        return sum(float(r["value"][1]) for r in result) if result else 0.0  # no series yet means 0

    def validate(self) -> None:
        """Run every template once: a rejected query is a ConfigError, an unreachable server a BackendError."""
        for name in ("requests", "errors", "latency_buckets"):
            self._query(getattr(self.config.queries, name), "blue", "1m")

    def begin(self, slot: str, endpoints: list[str]) -> None:
        """Remember when the window starts."""
        self._start[slot] = time.time()

    def measure(self, slot: str, endpoints: list[str]) -> SlotMetrics:
        """Requests, 5xx and latency buckets over the window since `begin`."""
        start = self._start.get(slot, time.time() - 60)
        seconds = max(1, round(time.time() - start + self.config.window_margin))
        window = f"{seconds}s"
        q = self.config.queries
        try:
            requests = self._scalar(self._query(q.requests, slot, window))
            errors = self._scalar(self._query(q.errors, slot, window))
            rows = self._query(q.latency_buckets, slot, window)
        except ConfigError as e:  # a template that failed now failed at validate too; keep it an error here
            raise BackendError(str(e)) from e
        buckets = sorted((float(r["metric"].get("le", "+Inf")), float(r["value"][1])) for r in rows)
        if buckets and not math.isinf(buckets[-1][0]):
            buckets.append((math.inf, buckets[-1][1]))
        self._start[slot] = time.time()
        return SlotMetrics(slot=slot, window=seconds, requests=round(requests, 3), errors=round(errors, 3),
                           buckets=buckets, source={"kind": NAME, "url": self.config.url, "window": window,
                                                    "queries": q.model_dump()})


@turnout.hookimpl
def register_metrics_providers():
    """The Prometheus provider."""
    return [Registration(NAME, PrometheusConfig, PrometheusProvider, "PromQL queries through prometheus-api-client")]
