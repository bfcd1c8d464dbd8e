"""What a metrics provider reports for one slot over a window, and the histogram arithmetic.

Plain Python with no I/O: the scrape and Prometheus providers fill a `SlotMetrics`, the judge
compares two of them. Latency comes as cumulative histogram buckets (Prometheus `le` semantics),
so p95 is computed the way PromQL's `histogram_quantile` does it.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["SlotMetrics", "histogram_quantile", "bucket_samples"]


class SlotMetrics(BaseModel):
    """Traffic of one slot over one window."""

    slot: str
    window: float = Field(..., ge=0, description="Seconds the numbers cover.")
    requests: float = Field(..., ge=0)
    errors: float = Field(0, ge=0, description="Responses with a 5xx status.")
    buckets: list[tuple[float, float]] = Field(
        default_factory=list, description="Cumulative latency histogram (le seconds, count), +Inf last.")
    source: dict[str, Any] = Field(default_factory=dict, description="Where the numbers came from (URLs, queries).")

    @property
    def error_rate(self) -> float | None:
        """5xx share, None without requests."""
        return self.errors / self.requests if self.requests else None

    @property
    def availability(self) -> float | None:
        """Non-5xx share, None without requests."""
        return 1 - self.errors / self.requests if self.requests else None

    @property
    def p95(self) -> float | None:
        """95th percentile latency in seconds from the buckets, None without observations."""
        return histogram_quantile(0.95, self.buckets)

    def summary(self) -> dict[str, Any]:
        """The numbers a verdict's evidence shows."""
        r = lambda v, n=4: None if v is None else round(v, n)  # noqa: E731
        return {"slot": self.slot, "window_s": r(self.window, 2), "requests": self.requests, "errors": self.errors,
                "error_rate": r(self.error_rate), "availability": r(self.availability), "p95_s": r(self.p95),
                "source": self.source}


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's histogram_quantile over cumulative (le, count) buckets; None when empty.

    Linear interpolation inside the bucket holding the rank; a rank in the +Inf bucket returns the
    highest finite bound, as Prometheus does.
    """
    if not buckets:
        return None
    buckets = sorted(buckets, key=lambda b: b[0])
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def bucket_samples(buckets: list[tuple[float, float]], cap: int = 20000) -> list[float]:
    """Representative latency samples from cumulative buckets (each observation at its bucket's midpoint).

    For rank tests: the order between buckets is exact, ties inside a bucket are ties. At most `cap`
    samples, scaled down proportionally.
    """
    buckets = sorted(buckets, key=lambda b: b[0])
    total = buckets[-1][1] if buckets else 0
    scale = min(1.0, cap / total) if total else 1.0
    out: list[float] = []
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        n = int(round((count - prev_count) * scale))
        value = prev_le * 2 if math.isinf(le) else (prev_le + le) / 2
        out.extend([value] * max(n, 0))
        prev_le, prev_count = (prev_le if math.isinf(le) else le), count
    return out
