"""Benchmark: what a command costs beyond its own work, as a new user runs it (issue 10's "Measure").

Default settings (no PREFECT_* variable: the shared local Prefect server; a temporary TURNOUT_HOME),
each command a new `turnout` process, as from a fresh shell:

- the first command ever (server start with a new database) and the first command after a "reboot"
  (no server running, its database kept), quoted separately;
- `turnout blue-green` between two healthy demo releases, 5 times: wall time minus the deployment's
  own time in the ledger (`finished_at - started_at`: from the lock to the outcome), and wall/own;
- `turnout recover` with nothing to do, 5 times; `turnout status`, 5 times;
- the same blue-green and status run in the command's own process (TURNOUT_WARM=0), for comparison;
- with `--long` (or BENCH_LONG=1): the shared server's peak RSS (VmHWM) after 100 deployments.

Prints the figures and the machine's load, then one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _project import cleanup, make_project

N = int(os.environ.get("BENCH_RUNS", "5"))
LONG = "--long" in sys.argv or os.environ.get("BENCH_LONG") == "1"
TURNOUT = str(Path(sys.executable).with_name("turnout"))


def env(home: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    e.update(TURNOUT_HOME=str(home), TURNOUT_SERVER_IDLE="0", **extra)
    return e


def run(home: Path, cdir: Path, *args: str, **extra: str) -> float:
    """Wall time of one `turnout ARGS` from a new process; it must succeed."""
    t0 = time.perf_counter()
    r = subprocess.run([TURNOUT, *args], cwd=cdir.parent, env=env(home, **extra), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"turnout {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return wall


def deployment_seconds(cdir: Path) -> float:
    """The last deployment's own time in the ledger."""
    from turnout.runtime import open_runtime

    rt = open_runtime("bench", cdir, check=False)
    d = rt.ledger.history("bench", 1)[0]
    rt.close()
    return (d["finished_at"] - d["started_at"]).total_seconds()


def blue_green(home: Path, cdir: Path, image: str, **extra: str) -> dict[str, float]:
    wall = run(home, cdir, "blue-green", "--image", image, "-e", "bench", **extra)
    own = deployment_seconds(cdir)
    return {"wall": wall, "own": own, "fixed": wall - own, "ratio": wall / own}


def server_state(home: Path) -> dict:
    return json.loads((home / "prefect-server" / "state.json").read_text())


def wait_warm(home: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (home / "prefect-server" / "warm.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="turnout-bench-home-"))
    cdir, _ = make_project()
    load_before = os.getloadavg()
    out: dict = {"bench": "cli_overhead", "runs": N}
    images = ["demo:v2", "demo:v1"]
    try:
        first = blue_green(home, cdir, "demo:v1")  # the first command ever: a new server database
        reboots = []
        for i in range(N):  # "reboot": no server running, its database kept
            run(home, cdir, "server", "stop")
            reboots.append(blue_green(home, cdir, images[i % 2]))
        wait_warm(home)
        run(home, cdir, "status", "-e", "bench")  # the warm runner is used from here on, as by any user
        bg = [blue_green(home, cdir, images[i % 2]) for i in range(N)]
        recover = [run(home, cdir, "recover", "-e", "bench") for _ in range(N)]
        status = [run(home, cdir, "status", "-e", "bench") for _ in range(N)]
        bg_cold = [blue_green(home, cdir, images[i % 2], TURNOUT_WARM="0") for i in range(N)]
        recover_cold = [run(home, cdir, "recover", "-e", "bench", TURNOUT_WARM="0") for _ in range(N)]
        status_cold = [run(home, cdir, "status", "-e", "bench", TURNOUT_WARM="0") for _ in range(N)]
        st = server_state(home)
        out["server_rss_mb_now"] = round(peak_rss_mb(st["server_pid"]), 1)
        out["warm_rss_mb_now"] = round(peak_rss_mb(st["warm_pid"]), 1) if st.get("warm_pid") else None
        if LONG:
            done = 3 * N + 1
            for i in range(100 - done):
                blue_green(home, cdir, images[i % 2])
            st = server_state(home)  # the warm runner may have been replaced (turnout's code changed)
            out["server_peak_rss_mb_after_100"] = round(peak_rss_mb(st["server_pid"]), 1)
            out["warm_peak_rss_mb_after_100"] = round(peak_rss_mb(st["warm_pid"]), 1)
    finally:
        subprocess.run([TURNOUT, "server", "stop", "--force"], env=env(home), capture_output=True)
        cleanup(cdir)
        shutil.rmtree(home, ignore_errors=True)
    load_after = os.getloadavg()

    def line(name: str, rows: list[dict[str, float]]) -> None:
        print(
            f"{name}: fixed cost median {med(rows, 'fixed'):.2f} s (max {max(r['fixed'] for r in rows):.2f}) = "
            f"wall {med(rows, 'wall'):.2f} s - deployment {med(rows, 'own'):.2f} s; ratio wall/deployment "
            f"{med(rows, 'ratio'):.2f}   runs (wall/own): " + ", ".join(f"{r['wall']:.2f}/{r['own']:.2f}" for r in rows)
        )

    print(f"machine load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores, shared)")
    print(
        f"first command ever (server start, new database): wall {first['wall']:.2f} s, "
        f"deployment {first['own']:.2f} s, "
        f"fixed {first['fixed']:.2f} s"
    )
    line("first command after a reboot (server restart)", reboots)
    line("turnout blue-green (shared server, warm runner)", bg)
    print(f"turnout recover, nothing to do: median {statistics.median(recover):.2f} s (max {max(recover):.2f})")
    print(f"turnout status: median {statistics.median(status) * 1000:.0f} ms (max {max(status) * 1000:.0f} ms)")
    line("turnout blue-green in its own process (TURNOUT_WARM=0)", bg_cold)
    print(f"turnout recover, nothing to do, own process: median {statistics.median(recover_cold):.2f} s")
    print(f"turnout status, own process: median {statistics.median(status_cold) * 1000:.0f} ms")
    print(
        f"RSS now: server {out['server_rss_mb_now']} MB, warm runner {out['warm_rss_mb_now']} MB"
        + (
            f"; peak after 100 deployments: server {out['server_peak_rss_mb_after_100']} MB, warm runner "
            f"{out['warm_peak_rss_mb_after_100']} MB"
            if LONG
            else " (--long: peak after 100 deployments)"
        )
    )
    out.update(
        {
            "load_before": round(load_before[0], 2),
            "load_after": round(load_after[0], 2),
            "first_ever_wall_s": round(first["wall"], 3),
            "first_ever_fixed_s": round(first["fixed"], 3),
            "after_reboot_wall_median_s": round(med(reboots, "wall"), 3),
            "after_reboot_fixed_median_s": round(med(reboots, "fixed"), 3),
            "blue_green_wall_median_s": round(med(bg, "wall"), 3),
            "blue_green_own_median_s": round(med(bg, "own"), 3),
            "blue_green_fixed_median_s": round(med(bg, "fixed"), 3),
            "blue_green_fixed_max_s": round(max(r["fixed"] for r in bg), 3),
            "blue_green_ratio_median": round(med(bg, "ratio"), 2),
            "recover_nothing_median_s": round(statistics.median(recover), 3),
            "recover_nothing_max_s": round(max(recover), 3),
            "status_median_ms": round(statistics.median(status) * 1000),
            "status_max_ms": round(max(status) * 1000),
            "cold_blue_green_fixed_median_s": round(med(bg_cold, "fixed"), 3),
            "cold_recover_nothing_median_s": round(statistics.median(recover_cold), 3),
            "cold_status_median_ms": round(statistics.median(status_cold) * 1000),
        }
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
