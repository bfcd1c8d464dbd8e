"""What a canary judge sees at each measurement: the window and the stage's cumulative counts.

Plain Python, no I/O. The analysis task adds every window a metrics provider returns to a
`StageTotals` (one per slot, restarted when a stage begins) and hands the judge a
`StageMeasurement`: the last window of each slot *and* everything each slot served since the stage
began. Judges decide on the cumulative counts, so the noise of one small window cannot trip a limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from turnout.metrics import SlotMetrics

__all__ = ["JudgeInputError", "StageMeasurement", "StageTotals", "same_bounds"]


class JudgeInputError(ValueError):
    """Metrics a judge cannot compare (e.g. histograms with different bucket bounds): a measurement error."""


def same_bounds(a: list[tuple[float, float]], b: list[tuple[float, float]], what: str) -> None:
    """Raise JudgeInputError when two non-empty histograms do not share their bucket bounds.

    Counts in different buckets cannot be compared bucket by bucket (nor added up): a clear error,
    never a wrong answer.
    """
    if a and b and [le for le, _ in a] != [le for le, _ in b]:
        raise JudgeInputError(
            f"{what}: histogram bucket bounds differ ({_bounds(a)} vs {_bounds(b)}); "
            "both must expose the same `le` buckets"
        )


def _bounds(buckets: list[tuple[float, float]]) -> str:
    les = [le for le, _ in buckets]
    shown = ", ".join("+Inf" if math.isinf(le) else f"{le:g}" for le in les[:8])
    return f"[{shown}{', ...' if len(les) > 8 else ''}]"


class StageTotals:
    """One slot's counts since the stage began, built from the windows a provider returns.

    `add(window)` sums window counts (providers return deltas, never negative). `observe(totals)` is
    for sources that report running totals instead: the difference from the previous totals is
    added, and a counter that went down (the process restarted) restarts the sums from the new
    totals — Prometheus' `increase` semantics — so a restart never produces negative counts.
    """

    def __init__(self, slot: str):
        self.slot = slot
        self._last: SlotMetrics | None = None
        self._reset()

    def _reset(self) -> None:
        self.window = 0.0
        self.requests = 0.0
        self.errors = 0.0
        self.buckets: list[tuple[float, float]] = []

    def add(self, window: SlotMetrics) -> SlotMetrics:
        """Add one window's counts; return the stage's totals so far."""
        same_bounds(self.buckets, window.buckets, f"slot {self.slot} changed its histogram within a stage")
        self.window += window.window
        self.requests += window.requests
        self.errors += window.errors
        if window.buckets:
            if not self.buckets:
                self.buckets = [(le, 0.0) for le, _ in window.buckets]
            self.buckets = [(le, c + w) for (le, c), (_, w) in zip(self.buckets, window.buckets, strict=False)]
        return self.totals(window.source)

    def observe(self, totals: SlotMetrics) -> SlotMetrics:
        """Add the growth of running totals since the last call; a counter that went down restarts the sums."""
        last, self._last = self._last, totals
        if last is None:
            return self.add(
                totals.model_copy(
                    update={
                        "requests": 0.0,
                        "errors": 0.0,
                        "window": 0.0,
                        "buckets": [(le, 0.0) for le, _ in totals.buckets],
                    }
                )
            )
        went_down = (
            totals.requests < last.requests
            or totals.errors < last.errors
            or any(c < p for (_, c), (_, p) in zip(totals.buckets, last.buckets, strict=False))
        )
        if went_down:
            self._reset()  # restart cleanly: count from the restart on
            return self.add(totals)
        same_bounds(last.buckets, totals.buckets, f"slot {self.slot} changed its histogram within a stage")
        delta = SlotMetrics(
            slot=self.slot,
            window=max(0.0, totals.window - last.window),
            requests=totals.requests - last.requests,
            errors=totals.errors - last.errors,
            buckets=[(le, c - p) for (le, c), (_, p) in zip(totals.buckets, last.buckets, strict=False)],
            source=totals.source,
        )
        return self.add(delta)

    def totals(self, source: dict | None = None) -> SlotMetrics:
        """The cumulative counts as a SlotMetrics (window = seconds measured in this stage)."""
        return SlotMetrics(
            slot=self.slot,
            window=self.window,
            requests=self.requests,
            errors=min(self.errors, self.requests) if self.requests else self.errors,
            buckets=list(self.buckets),
            source=dict(source or {}),
        )


@dataclass
class StageMeasurement:
    """One measurement of a stage: the window just measured and the stage's totals, canary and stable."""

    canary: SlotMetrics  # the window just measured
    stable: SlotMetrics
    canary_total: SlotMetrics  # everything since the stage began (restart-safe sums)
    stable_total: SlotMetrics
    weight: int = 0  # the canary's share of traffic in this stage (%)
    index: int = 1  # 1-based measurement number in the stage
    planned: int = 1  # measurements the stage's duration allows for

    @classmethod
    def of(cls, canary: SlotMetrics, stable: SlotMetrics, **kw) -> StageMeasurement:
        """A stage of one window (its totals are the window): for tests and one-off checks."""
        return cls(canary, stable, canary, stable, **kw)
