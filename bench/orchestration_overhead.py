"""Benchmark: what Prefect orchestration costs a blue-green, and how fast `turnout status` answers.

Runs the blue-green flow N times through Prefect (after a warm-up), then the very same flow code
with every task replaced by its plain function (no flow run, no task runs, no artifact), and
reports the ratio. Then times `turnout status` as a subprocess. Last line: one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from _project import ROOT, cleanup, make_project

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

N = int(os.environ.get("BENCH_RUNS", "4"))


def main() -> int:
    import turnout.outcome as outcome_mod
    from turnout.flows import blue_green

    cdir, _ = make_project()
    params = dict(environment="bench", config_dir=str(cdir))
    images = ["demo:v2", "demo:v1"]
    try:
        blue_green.run(image="demo:v1", **params)  # warm-up: Prefect engine, first NGINX start
        prefect_times = []
        for i in range(N):
            t0 = time.perf_counter()
            assert blue_green.run(image=images[i % 2], **params)["outcome"] == "promoted"
            prefect_times.append(time.perf_counter() - t0)

        # the same steps as plain Python: tasks become their functions, no run logger, no artifact
        from prefect.logging import disable_run_logger

        from turnout.flows import _steps

        saved = {n: getattr(_steps, n) for n in ("start_release", "stop_slot", "run_gates", "shift_traffic")}
        for n, t in saved.items():
            setattr(_steps, n, t.fn)
        art, outcome_mod._artifact = outcome_mod._artifact, lambda *a, **k: None
        plain_times = []
        try:
            with disable_run_logger():
                for i in range(N):
                    t0 = time.perf_counter()
                    try:
                        out = asyncio.run(blue_green.blue_green.fn(image=images[i % 2], **params))
                    except outcome_mod.DeploymentFailed as e:
                        out = e.outcome
                    assert out["outcome"] == "promoted", out
                    plain_times.append(time.perf_counter() - t0)
        finally:
            for n, t in saved.items():
                setattr(_steps, n, t)
            outcome_mod._artifact = art

        status_times = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "turnout.app.cli", "status", "-e", "bench", "--config-dir", str(cdir)],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            status_times.append(time.perf_counter() - t0)
    finally:
        cleanup(cdir)

    pf, pl, st = statistics.median(prefect_times), statistics.median(plain_times), statistics.median(status_times)
    mode = "server " + os.environ["PREFECT_API_URL"] if os.environ.get("PREFECT_API_URL") else "ephemeral"
    print(
        f"blue-green through Prefect ({mode}): median {pf:.2f} s over {N} runs {[round(t, 2) for t in prefect_times]}"
    )
    print(
        f"same steps as plain Python:            median {pl:.2f} s over {N} runs {[round(t, 2) for t in plain_times]}"
    )
    print(f"ratio Prefect / plain: {pf / pl:.2f}   (overhead {pf - pl:+.2f} s per deployment)")
    print(f"turnout status: median {st * 1000:.0f} ms over 5 runs (max {max(status_times) * 1000:.0f} ms)")
    print(
        json.dumps(
            {
                "bench": "orchestration_overhead",
                "prefect_mode": mode,
                "prefect_median_s": round(pf, 3),
                "plain_median_s": round(pl, 3),
                "ratio": round(pf / pl, 2),
                "overhead_s": round(pf - pl, 3),
                "status_median_ms": round(st * 1000),
                "status_max_ms": round(max(status_times) * 1000),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
