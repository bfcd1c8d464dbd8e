"""Benchmark: false aborts and time to detect of the canary judges, on simulated traffic (no services).

Plain Python, seeded. Poisson traffic — 200 requests/s in total, the canary's share at each stage
of the default ramp (10, 25, 50 %, `BENCH_STAGE_SECONDS` = 60 s each) — with 5xx drawn per
request and latencies drawn from a log-normal (median 50 ms, p95 ≈ 114 ms) into Prometheus'
default histogram buckets. Each second's counts become `SlotMetrics`, added to the stage's
`StageTotals` and handed to the real judge objects (the plugins, default settings, confidence
0.95) as a `StageMeasurement`, and the real `decide_stage` applies the stage limits — a check
every 1 s. (Inconclusive measurements at the start of a stage, before `min_requests` requests,
are not counted against `inconclusive_limit` here: at 1 s looks that limit measures the interval,
not the judge.)

- false aborts: ≥ 1000 healthy canaries per judge (both slots identical) at baseline 5xx rates of
  0, 0.1, 1 and 2 %; a healthy canary is aborted if any measurement of any stage fails;
- detection: a bad canary from its first shift (baseline 0.1 % 5xx, p95 ≈ 114 ms on stable):
  5xx +1, +2, +5, +20 points and p95 +0.1, +0.5, +3 s; median and 90th percentile of the seconds to
  the failing measurement over the ramp (null when more than half, or 10 %, of the runs were never
  caught during the whole ramp).

`BENCH_QUICK=1`: 200 healthy canaries per judge and baseline, 40 bad runs per effect (else 1000 and 100).
`BENCH_HEALTHY_RUNS`, `BENCH_BAD_RUNS`, `BENCH_WORKERS` (2) override. The last line printed is one
JSON object: {"judges": {name: {"alpha", "healthy_runs", "false_abort_rate",
"false_abort_rate_by_baseline", "detect_median_s", "detect_p90_s"}}}.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUICK = os.environ.get("BENCH_QUICK") == "1"
HEALTHY_RUNS = int(os.environ.get("BENCH_HEALTHY_RUNS", "200" if QUICK else "1000"))
BAD_RUNS = int(os.environ.get("BENCH_BAD_RUNS", "40" if QUICK else "100"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
STAGE_SECONDS = int(os.environ.get("BENCH_STAGE_SECONDS", "60"))
STAGES = (10, 25, 50)  # the default ramp's judged stages (100 is the promotion)
RPS = 200.0
BASELINES = (0.0, 0.001, 0.01, 0.02)
DETECT_BASELINE = 0.001
EFFECTS = {
    "5xx+1pt": ("err", 0.01),
    "5xx+2pt": ("err", 0.02),
    "5xx+5pt": ("err", 0.05),
    "5xx+20pt": ("err", 0.20),
    "p95+0.1s": ("lat", 0.1),
    "p95+0.5s": ("lat", 0.5),
    "p95+3s": ("lat", 3.0),
}
JUDGES = ("threshold", "statistical", "sequential")
LES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
MEDIAN_S, SIGMA = 0.05, 0.5


def _bucket_probs(shift: float) -> np.ndarray:
    """Probability of each (non-cumulative) bucket for latency = lognormal + shift."""
    from scipy.stats import lognorm

    cdf = [
        1.0 if math.isinf(le) else (lognorm.cdf(le - shift, SIGMA, scale=MEDIAN_S) if le > shift else 0.0) for le in LES
    ]
    return np.diff(np.concatenate([[0.0], cdf]))


def _make_judge(name: str):
    from turnout.config import ThresholdsConfig
    from turnout.plugins.sequential import SequentialJudge
    from turnout.plugins.statistical import StatisticalJudge
    from turnout.plugins.threshold import ThresholdJudge

    cls = {"threshold": ThresholdJudge, "statistical": StatisticalJudge, "sequential": SequentialJudge}[name]
    return cls(ThresholdsConfig())


def _slot_second(rng, rate: float, err: float, probs: np.ndarray, n: int):
    """`n` seconds of one slot: requests, 5xx and bucket counts per second."""
    req = rng.poisson(rate, n)
    errs = rng.binomial(req, err)
    buckets = rng.multinomial(req, probs)
    return req, errs, buckets


def _rows(req, errs, buckets) -> list[tuple[float, float, list[tuple[float, float]]]]:
    """Per second: (requests, errors, cumulative buckets as (le, count))."""
    cum = np.cumsum(buckets, axis=1).tolist()
    return [
        (float(r), float(e), list(zip(LES, b, strict=False)))
        for r, e, b in zip(req.tolist(), errs.tolist(), cum, strict=False)
    ]


def _metrics(slot: str, row, window: float):
    from turnout.metrics import SlotMetrics

    # model_construct: the numbers are valid by construction, and validation would be most of the cost
    return SlotMetrics.model_construct(
        slot=slot, window=window, requests=row[0], errors=row[1], buckets=row[2], source={}
    )


def run_canary(judge_name: str, seed: int, baseline: float, effect: tuple[str, float] | None) -> float | None:
    """One canary through the ramp; the second (from the first shift) of its first failing measurement, or None."""
    from turnout.judge import decide_stage
    from turnout.measurement import StageMeasurement
    from turnout.models import Outcome

    rng = np.random.default_rng(seed)
    judge = _make_judge(judge_name)
    stable_probs = _bucket_probs(0.0)
    canary_probs = _bucket_probs(effect[1]) if effect and effect[0] == "lat" else stable_probs
    canary_err = baseline + (effect[1] if effect and effect[0] == "err" else 0.0)
    elapsed = 0
    for weight in STAGES:
        judge.begin_stage(weight)
        w = weight / 100
        c = _slot_second(rng, RPS * w, canary_err, canary_probs, STAGE_SECONDS)
        s = _slot_second(rng, RPS * (1 - w), baseline, stable_probs, STAGE_SECONDS)
        # every second's window and the stage's running totals (what StageTotals adds up), all at once
        windows = [_rows(*c), _rows(*s)]
        totals = [_rows(*(np.cumsum(a, axis=0) for a in c)), _rows(*(np.cumsum(a, axis=0) for a in s))]
        outcomes: list[Outcome] = []
        for i in range(STAGE_SECONDS):
            m = StageMeasurement(
                _metrics("green", windows[0][i], 1.0),
                _metrics("blue", windows[1][i], 1.0),
                _metrics("green", totals[0][i], i + 1.0),
                _metrics("blue", totals[1][i], i + 1.0),
                weight=weight,
                index=i + 1,
                planned=STAGE_SECONDS,
            )
            v = judge.judge(m)
            outcomes.append(v.outcome)
            if v.outcome is Outcome.FAIL:  # failure_limit 0: the first failing measurement aborts
                return float(elapsed + i + 1)
        # nothing else can end a stage early here (no errors; inconclusive not counted), so the stage
        # limits are asked once, at its end: a stage whose last measurement did not pass aborts too
        d = decide_stage(outcomes, planned=STAGE_SECONDS, inconclusive_limit=STAGE_SECONDS, stage_extension=0)
        if d.outcome is not Outcome.PASS:
            return float(elapsed + STAGE_SECONDS)
        elapsed += STAGE_SECONDS
    return None


def _chunk(args: tuple) -> list[float | None]:
    judge_name, seeds, baseline, effect = args
    return [run_canary(judge_name, seed, baseline, effect) for seed in seeds]


def _pmap(pool, judge_name: str, seeds: list[int], baseline: float, effect) -> list[float | None]:
    step = max(1, len(seeds) // (WORKERS * 4))
    chunks = [(judge_name, seeds[i : i + step], baseline, effect) for i in range(0, len(seeds), step)]
    return [r for part in pool.map(_chunk, chunks) for r in part]


def _quantile(times: list[float | None], q: float) -> float | None:
    """The q-quantile of detection times, counting never-caught runs as infinitely late (then None)."""
    xs = sorted(math.inf if t is None else t for t in times)
    v = xs[min(len(xs) - 1, math.ceil(q * len(xs)) - 1)]
    return None if math.isinf(v) else v


def main() -> int:
    started = time.monotonic()
    out: dict = {"judges": {}}
    with ProcessPoolExecutor(WORKERS) as pool:
        for name in JUDGES:
            by_baseline = {}
            for b, baseline in enumerate(BASELINES):
                seeds = [1_000_000 * b + k for k in range(HEALTHY_RUNS)]  # the same traffic for every judge
                aborted = sum(t is not None for t in _pmap(pool, name, seeds, baseline, None))
                by_baseline[f"{baseline:g}"] = round(aborted / HEALTHY_RUNS, 4)
            med, p90 = {}, {}
            for e, (label, effect) in enumerate(EFFECTS.items()):
                seeds = [50_000_000 + 1_000_000 * e + k for k in range(BAD_RUNS)]
                times = _pmap(pool, name, seeds, DETECT_BASELINE, effect)
                med[label], p90[label] = _quantile(times, 0.5), _quantile(times, 0.9)
            out["judges"][name] = {
                "alpha": 0.05,
                "healthy_runs": HEALTHY_RUNS,
                "false_abort_rate": max(by_baseline.values()),
                "false_abort_rate_by_baseline": by_baseline,
                "detect_median_s": med,
                "detect_p90_s": p90,
            }
            print(
                f"{name:12} false aborts by baseline {by_baseline}; detect median {med}; p90 {p90} "
                f"({time.monotonic() - started:.0f}s)",
                flush=True,
            )
    print(
        f"# {HEALTHY_RUNS} healthy canaries per judge and baseline, {BAD_RUNS} bad per effect, "
        f"stages {STAGES} x {STAGE_SECONDS}s, {RPS:g} req/s, a look every 1 s; {time.monotonic() - started:.0f}s"
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
