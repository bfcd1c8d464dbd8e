"""Benchmark: how fast a bad canary is caught, and how often a good one is wrongly aborted.

A canary at 10% that answers 5xx on 20% of API calls (demo:v3), under a bounded steady load
(8 connections to /api/items through NGINX, 127.0.0.1 only): time from the first traffic shift
to the abort verdict and to traffic 100% back on stable, with the threshold, statistical and
sequential judges. Then `BENCH_HEALTHY_RUNS` (20) healthy canaries *per judge* (demo:v2/v1
alternately): the false-abort rate. Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from _project import cleanup, make_project

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import turnout
from turnout.loadgen import Load

INTERVAL = float(os.environ.get("BENCH_INTERVAL", "3"))
BAD_RUNS = int(os.environ.get("BENCH_BAD_RUNS", "3"))
HEALTHY_RUNS = int(os.environ.get("BENCH_HEALTHY_RUNS", "20"))  # per judge
JUDGES = ("threshold", "statistical", "sequential")


class Clock:
    """Monotonic times of the events that matter, through the broadcast hook."""

    def __init__(self):
        self.marks: list[tuple[str, float, dict]] = []

    @turnout.hookimpl
    def deployment_event(self, event):
        if event.kind in ("traffic.shifted", "gate.verdict"):
            self.marks.append((event.kind, time.monotonic(), event.data))


def set_judge(cdir, judge: str) -> None:
    path = cdir / "bench.toml"
    text = path.read_text()
    for old in JUDGES:
        text = text.replace(f'judge = "{old}"', f'judge = "{judge}"')
    path.write_text(text)


def main() -> int:
    from turnout.flows import blue_green, canary
    from turnout.registry import get_registry

    extra = (
        f"\n[canary]\nstages = [10, 100]\nduration = {INTERVAL * 2}\ninterval = {INTERVAL}\n"
        'judge = "threshold"\nmin_requests = 20\n'
    )
    cdir, url = make_project(extra=extra)
    clock = Clock()
    get_registry().pm.register(clock)
    params = dict(environment="bench", config_dir=str(cdir), auto_promote=True)
    detection: dict[str, list[dict]] = {j: [] for j in JUDGES}
    healthy: dict[str, list[str]] = {j: [] for j in JUDGES}
    load = None
    try:
        assert blue_green.run(environment="bench", image="demo:v1", config_dir=str(cdir))["outcome"] == "promoted"
        load = Load(url + "api/items", connections=8, max_requests=2_000_000, max_seconds=1800).start()
        for judge in JUDGES:
            set_judge(cdir, judge)
            for _ in range(BAD_RUNS):
                clock.marks.clear()
                out = canary.run(image="demo:v3", **params)
                shifts = [t for k, t, d in clock.marks if k == "traffic.shifted"]
                fail = next((t for k, t, d in clock.marks if k == "gate.verdict" and d.get("outcome") == "fail"), None)
                row = {
                    "outcome": out["outcome"],
                    "to_verdict_s": round(fail - shifts[0], 2) if fail and shifts else None,
                    "to_stable_s": round(shifts[-1] - shifts[0], 2) if len(shifts) > 1 else None,
                }
                detection[judge].append(row)
                print(f"{judge:<11} bad canary: {row}", flush=True)
        images = ["demo:v2", "demo:v1"]
        for i in range(HEALTHY_RUNS * len(JUDGES)):
            judge = JUDGES[i % len(JUDGES)]
            set_judge(cdir, judge)
            out = canary.run(image=images[i % 2], **params)
            healthy[judge].append(out["outcome"])
            print(
                f"{judge:<11} healthy canary {i + 1}/{HEALTHY_RUNS * len(JUDGES)}: "
                f"{out['outcome']} {out['reason'][:100]}",
                flush=True,
            )
    finally:
        if load is not None:
            res = load.stop()
        cleanup(cdir)

    summary = {}
    print(f"\nanalysis interval {INTERVAL:g} s; load {res.as_dict()['rps']}/s to /api/items (8 connections)")
    for judge in JUDGES:
        caught = [r for r in detection[judge] if r["outcome"] == "aborted" and r["to_verdict_s"] is not None]
        v = [r["to_verdict_s"] for r in caught]
        s = [r["to_stable_s"] for r in caught if r["to_stable_s"] is not None]
        false = healthy[judge].count("aborted") + healthy[judge].count("failed")
        summary[judge] = {
            "bad_caught": f"{len(caught)}/{len(detection[judge])}",
            "to_verdict_s_median": statistics.median(v) if v else None,
            "to_verdict_s_max": max(v, default=None),
            "to_stable_s_median": statistics.median(s) if s else None,
            "false_aborts": f"{false}/{len(healthy[judge])}",
        }
        print(
            f"{judge:<11}: bad canary caught {summary[judge]['bad_caught']}, first shift -> abort verdict median "
            f"{summary[judge]['to_verdict_s_median']} s (max {summary[judge]['to_verdict_s_max']} s), "
            f"-> 100% stable median {summary[judge]['to_stable_s_median']} s; "
            f"false aborts {summary[judge]['false_aborts']}"
        )
    print(json.dumps({"bench": "canary_detection", "interval_s": INTERVAL, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
