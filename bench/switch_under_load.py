"""Benchmark: blue-green 5 times back and forth under a bounded load through NGINX.

Load: 50 keep-alive connections (threads) to 127.0.0.1 only, from before the first switch until
just after the last, bounded by 120 s and 300 000 requests.
Prints requests, non-2xx, connection errors, keep-alive closes retried (as clients do), and per
switch the time from the switch command (router apply) until every response comes from the new
slot. Last line: one JSON object.
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

SWITCHES = int(os.environ.get("BENCH_SWITCHES", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
MAX_SECONDS = float(os.environ.get("BENCH_SECONDS", "120"))  # a ceiling: the load stops after the last switch


class SwitchClock:
    """Records when each switch command starts (monotonic), through the broadcast hook."""

    def __init__(self):
        self.starts: list[float] = []

    @turnout.hookimpl
    def deployment_event(self, event):
        if event.kind == "phase.started" and event.phase == "switch" and "split" in event.data:
            self.starts.append(time.monotonic())


def main() -> int:
    from turnout.flows import blue_green
    from turnout.registry import get_registry

    cdir, url = make_project()
    clock = SwitchClock()
    get_registry().pm.register(clock)
    try:
        print("warming up: first deployment (demo:v1) and the Prefect engine ...", flush=True)
        assert blue_green.run(environment="bench", image="demo:v1", config_dir=str(cdir))["outcome"] == "promoted"
        clock.starts.clear()
        load = Load(
            url, connections=CONNECTIONS, max_requests=300_000, max_seconds=MAX_SECONDS, keep_timeline=True
        ).start()
        time.sleep(1.0)
        releases = ["demo:v2", "demo:v1"] * SWITCHES
        results = []
        for i in range(SWITCHES):
            t0 = time.monotonic()
            out = blue_green.run(environment="bench", image=releases[i], config_dir=str(cdir))
            results.append(
                {"release": releases[i], "outcome": out["outcome"], "flow_seconds": round(time.monotonic() - t0, 2)}
            )
            time.sleep(0.5)
        res = load.stop()
        if res.seconds >= MAX_SECONDS:
            print(f"warning: the load hit its {MAX_SECONDS:g} s ceiling before the last switch", flush=True)
    finally:
        cleanup(cdir)

    # convergence: from the switch command to the last response served by the previous release
    load_t0 = load._t0
    for i, r in enumerate(results):
        start = clock.starts[i] - load_t0
        end = clock.starts[i + 1] - load_t0 if i + 1 < len(clock.starts) else float("inf")
        old = releases[i - 1] if i else "demo:v1"
        last_old = max((t for t, rel in res.timeline if start <= t < end and rel == old), default=start)
        first_new = min((t for t, rel in res.timeline if start <= t < end and rel == r["release"]), default=None)
        r["converged_ms"] = round((last_old - start) * 1000, 1)
        r["first_new_ms"] = round((first_new - start) * 1000, 1) if first_new is not None else None

    summary = res.as_dict()
    conv = [r["converged_ms"] for r in results]
    print(
        f"\nload: {summary['requests']} requests in {summary['seconds']} s ({summary['rps']}/s), "
        f"{CONNECTIONS} keep-alive connections, through NGINX"
    )
    print(
        f"non-2xx: {summary['non_2xx']}   connection errors: {summary['connection_errors']}   "
        f"keep-alive closes retried: {summary['retried_after_keepalive_close']}"
    )
    for i, r in enumerate(results, 1):
        print(
            f"switch {i}: -> {r['release']:<8} {r['outcome']:<9} flow {r['flow_seconds']:>5.2f} s   "
            f"first new response {r['first_new_ms']} ms   all responses new after {r['converged_ms']} ms"
        )
    print(f"convergence: median {statistics.median(conv)} ms, max {max(conv)} ms")
    ok = (
        summary["non_2xx"] == 0
        and summary["connection_errors"] == 0
        and all(r["outcome"] == "promoted" for r in results)
    )
    print(
        json.dumps(
            {
                "bench": "switch_under_load",
                "passed": ok,
                **summary,
                "switches": results,
                "convergence_ms_median": statistics.median(conv),
                "convergence_ms_max": max(conv),
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
