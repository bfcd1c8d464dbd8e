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
    window_margin: float = Field(
        2.0,
        ge=0,
        description="Seconds added to each window: about two scrape "
        "intervals, so the samples around the window's start are inside it.",
    )
    series_wait: float = Field(
        15.0,
        ge=0,
        description="Seconds the series check before traffic moves waits "
        "for a slot's series to appear: a Prometheus started moments ago, or a slot "
        "it has not scraped yet, is not yet a misconfiguration.",
    )
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
            # a client-side timeout too: a Prometheus that answers late is a measurement error, not a stall
            self._pc = PrometheusConnect(url=self.config.url, disable_ssl=True, timeout=self.config.timeout)
        return self._pc

    @staticmethod
    def _scalar(result: list[dict]) -> float:
        return sum(float(r["value"][1]) for r in result) if result else 0.0  # no series yet means 0

    def validate(self) -> None:
        """Run every template once: a rejected query is a ConfigError, an unreachable server a BackendError."""
        for name in ("requests", "errors", "latency_buckets"):
            self._query(getattr(self.config.queries, name), "blue", "1m")

    def check_series(self, slot: str, endpoints: list[str], fresh: bool = False) -> None:
        """Every series the requests and latency templates select exists for `slot` in Prometheus.

        Asked of Prometheus' series API with each `name{labels}` selector of the templates (`$slot`
        substituted), so it does not depend on having data yet: a selector that matches nothing means
        the metric names or labels do not match what Prometheus holds, and the error lists the names it
        does hold. A `fresh` slot is skipped: Prometheus may not have scraped it yet. Missing series
        are asked again for up to `series_wait` seconds before that is an error.
        """
        if fresh:
            return
        deadline = time.monotonic() + self.config.series_wait
        while True:
            missing = self._missing_series(slot)
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"metrics.queries: no series match {', '.join(missing)} for slot {slot} at "
                    f"{self.config.url} after {self.config.series_wait:g}s; Prometheus has: "
                    f"{self._names() or 'no metrics'}"
                )
            time.sleep(1.0)  # about one scrape interval of a test setup; a real one finds them at once

    def _missing_series(self, slot: str) -> list[str]:
        """The `name (selector)` of each templated selector that matches no series for `slot`."""
        import re

        import httpx

        q = self.config.queries
        missing = []
        for name in ("requests", "latency_buckets"):
            template = getattr(q, name).replace("$slot", slot).replace("$release", "")
            for selector in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*\{[^{}]*\}", template):
                try:
                    r = httpx.get(
                        f"{self.config.url.rstrip('/')}/api/v1/series",
                        params={"match[]": selector},
                        timeout=self.config.timeout,
                    )
                    found = r.json().get("data") if r.status_code == 200 else None
                except (httpx.HTTPError, ValueError) as e:
                    raise BackendError(f"Prometheus at {self.config.url} did not answer: {type(e).__name__}") from e
                if found is None:
                    raise ConfigError(
                        f"metrics.queries.{name}: Prometheus refuses the selector {selector!r}: "
                        f"HTTP {r.status_code} {r.text[:200]}"
                    )
                if not found:
                    missing.append(f"{name} ({selector})")
        return missing

    def _names(self) -> str:
        """Metric names Prometheus holds that look like request counters or latency histograms."""
        import re

        try:
            names = self._client().all_metrics()
        except Exception:
            return "(could not list its metric names)"
        hits = [n for n in names if re.search(r"request|latency|duration|http", n, re.I)]
        return ", ".join(hits[:15])

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
            buckets = sorted((float(r["metric"].get("le", "+Inf")), float(r["value"][1])) for r in rows)
        except ConfigError as e:  # a template that failed now failed at validate too; keep it an error here
            raise BackendError(str(e)) from e
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise BackendError(
                f"Prometheus at {self.config.url} answered something that is not a vector of "
                f"numbers: {type(e).__name__}: {e}"
            ) from e
        if buckets and not math.isinf(buckets[-1][0]):
            buckets.append((math.inf, buckets[-1][1]))
        self._start[slot] = time.time()
        return SlotMetrics.measured(
            slot=slot,
            window=seconds,
            requests=round(requests, 3),
            errors=round(errors, 3),
            buckets=buckets,
            source={"kind": NAME, "url": self.config.url, "window": window, "queries": q.model_dump()},
        )


@turnout.hookimpl
def register_metrics_providers():
    """The Prometheus provider."""
    return [Registration(NAME, PrometheusConfig, PrometheusProvider, "PromQL queries through prometheus-api-client")]
