"""What a metrics provider reports for one slot over a window, and the histogram arithmetic.

Plain Python with no I/O: the scrape and Prometheus providers fill a `SlotMetrics`, the judge
compares two of them. Latency comes as cumulative histogram buckets (Prometheus `le` semantics),
so p95 is computed the way PromQL's `histogram_quantile` does it.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from turnout.errors import BackendError

__all__ = ["SlotMetrics", "histogram_quantile", "count_at_or_below", "bucket_samples"]


class SlotMetrics(BaseModel):
    """Traffic of one slot over one window."""

    slot: str
    window: float = Field(..., ge=0, allow_inf_nan=False, description="Seconds the numbers cover.")
    requests: float = Field(..., ge=0, allow_inf_nan=False)
    errors: float = Field(0, ge=0, allow_inf_nan=False, description="Responses with a 5xx status.")
    buckets: list[tuple[float, float]] = Field(
        default_factory=list, description="Cumulative latency histogram (le seconds, count), +Inf last."
    )
    source: dict[str, Any] = Field(default_factory=dict, description="Where the numbers came from (URLs, queries).")

    @field_validator("buckets")
    @classmethod
    def _finite_counts(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for le, count in v:
            if math.isnan(le) or le < 0:
                raise ValueError(f"bucket bound {le!r} is not a latency in seconds")
            if not math.isfinite(count) or count < 0:
                raise ValueError(f"bucket le={le:g} holds {count!r}, not a count")
        return v

    @classmethod
    def measured(cls, **fields: Any) -> SlotMetrics:
        """Build from a metrics source's numbers; NaN, Inf, negative or garbage values are a BackendError.

        A metrics source that answers nonsense makes that measurement an *error* (never a pass, never
        an exception that strands a deployment), saying which value was wrong.
        """
        try:
            return cls(**fields)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "value"
            source = fields.get("source", {}).get("kind", "the metrics source")
            raise BackendError(
                f"{source} answered an unusable {where} for slot {fields.get('slot')}: "
                f"{first['msg']} (got {first.get('input')!r:.80})"
            ) from None

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
        rate, p95 = self.error_rate, self.p95
        return {
            "slot": self.slot,
            "window_s": round(self.window, 2),
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": None if rate is None else round(rate, 4),
            "availability": None if rate is None else round(1 - rate, 4),
            "p95_s": None if p95 is None else round(p95, 4),
            "source": self.source,
        }


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's histogram_quantile over cumulative (le, count) buckets; None when empty.

    Linear interpolation inside the bucket holding the rank; a rank in the +Inf bucket returns the
    highest finite bound, as Prometheus does.
    """
    if not buckets:
        return None
    if any(a[0] > b[0] for a, b in itertools.pairwise(buckets)):  # providers give them sorted: skip the sort then
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


def count_at_or_below(buckets: list[tuple[float, float]], value: float) -> float:
    """Observations at or below `value` seconds, interpolated linearly inside its bucket (the inverse of
    `histogram_quantile`); 0 without buckets."""
    prev_le, prev_count = 0.0, 0.0
    for le, count in sorted(buckets, key=lambda b: b[0]):
        if value <= le:
            if math.isinf(le):
                return prev_count
            return prev_count + (count - prev_count) * (value - prev_le) / (le - prev_le) if le > prev_le else count
        prev_le, prev_count = le, count
    return prev_count


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
        n = round((count - prev_count) * scale)
        value = prev_le * 2 if math.isinf(le) else (prev_le + le) / 2
        out.extend([value] * max(n, 0))
        prev_le, prev_count = (prev_le if math.isinf(le) else le), count
    return out
