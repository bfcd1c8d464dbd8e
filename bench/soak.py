"""Soak: 30 alternating blue-green deployments and 10 canaries (half of them bad) under a bounded steady load.

Every command runs as an operator would (`turnout ...`, no PREFECT_* variable: the shared local Prefect
server and the warm runner, in a temporary TURNOUT_HOME). Measured:

- the client-side errors of a steady load through NGINX (2 connections), over the whole soak;
- outcomes by kind (promoted, aborted, ...) and per-command wall time;
- RSS and open file descriptors of the long-lived components (NGINX master + workers, the shared Prefect
  server, the warm runner), at the start and the end (growth = a leak);
- servers left running afterwards: slot processes not taking traffic, NGINX and the shared Prefect server
  after `turnout server stop` and the benchmark's cleanup (must be 0).

SOAK_BLUE_GREEN / SOAK_CANARIES change the counts. Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _project import ROOT, cleanup, make_project

BLUE_GREEN = int(os.environ.get("SOAK_BLUE_GREEN", "30"))
CANARIES = int(os.environ.get("SOAK_CANARIES", "10"))
BIN = Path(sys.executable).parent / "turnout"


def _env(home: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    e.update(TURNOUT_HOME=str(home), TURNOUT_SERVER_IDLE="0")
    return e


def turnout(root: Path, home: Path, *args: str) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [str(BIN), *args, "-e", "bench", "--json"],
        cwd=root,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - t0
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        out = {"outcome": f"exit {r.returncode}", "reason": r.stderr.strip()[-300:]}
    return r.returncode, out, seconds


def _proc(pid: int) -> dict[str, float] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return {"rss_mb": round(rss / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd"))}
    except (OSError, StopIteration):
        return None


def components(cdir: Path, home: Path) -> dict[str, dict]:
    """RSS and fds of NGINX (master + workers), the shared Prefect server and the warm runner."""
    from turnout.procs import children_of
    from turnout.runtime import open_runtime

    os.environ["TURNOUT_HOME"] = str(home)
    from turnout.app.prefect_server import server_status

    out: dict[str, dict] = {}
    rt = open_runtime("bench", cdir, check=False)
    try:
        master = rt.router._master_pid()
    except Exception:
        master = None
    if master:
        procs = [p for p in [_proc(master)] + [_proc(w) for w in children_of(master)] if p]
        out["nginx"] = {
            "processes": len(procs),
            "rss_mb": round(sum(p["rss_mb"] for p in procs), 1),
            "fds": sum(p["fds"] for p in procs),
        }
    st = server_status()
    for name, key in (("prefect_server", "pid"), ("warm_runner", "warm_pid")):
        p = _proc(st[key]) if st.get(key) else None
        if p:
            out[name] = p
    return out


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="turnout-soak-home-"))
    cdir, url = make_project(extra="\n[canary]\nstages = [25, 100]\nduration = 3\ninterval = 1\nmin_requests = 5\n")
    root = cdir.parent
    from turnout.loadgen import Load

    outcomes: Counter = Counter()
    errors_by_step: Counter = Counter()  # client errors seen while each kind of command ran
    times: dict[str, list[float]] = {"blue-green": [], "canary": []}
    _code, out, _ = turnout(root, home, "blue-green", "--image", "demo:v1")
    assert out.get("outcome") == "promoted", out
    load = Load(url + "api/items", connections=2, max_requests=10_000_000, max_seconds=3600).start()
    start = components(cdir, home)
    t0 = time.monotonic()
    try:
        plan = ["blue-green"] * BLUE_GREEN
        for i in range(CANARIES):  # spread the canaries through the run
            plan.insert((i + 1) * len(plan) // (CANARIES + 1), "canary-bad" if i % 2 else "canary")
        n = 1
        for step in plan:
            n += 1
            seen = load.result.non_2xx + load.result.connection_errors
            if step == "blue-green":
                _code, out, s = turnout(root, home, "blue-green", "--image", f"demo:s{n}")
                times["blue-green"].append(s)
            else:
                image = "demo:v3" if step == "canary-bad" else f"demo:s{n}"  # v3: 5xx on 20% of API calls
                _code, out, s = turnout(root, home, "canary", "--image", image, "--auto-promote")
                times["canary"].append(s)
            outcomes[f"{step}: {out.get('outcome')}"] += 1
            errors_by_step[step] += load.result.non_2xx + load.result.connection_errors - seen
            print(f"{step:11} {out.get('outcome'):10} {s:5.1f}s  {str(out.get('reason', ''))[:100]}", flush=True)
    finally:
        res = load.stop()
        wall = time.monotonic() - t0
        end = components(cdir, home)
        rt_split = None
        try:
            from turnout.runtime import open_runtime

            rt = open_runtime("bench", cdir, check=False)
            rt_split = rt.router_state().split
            idle = [
                s
                for s in ("blue", "green")
                if rt_split
                and rt_split.weight(s) == 0
                and rt.target.status(s).running
                and rt.ledger.environment_state("bench")["slots"][s]["state"] != "warm"
            ]
        except Exception:
            idle = ["?"]
        subprocess.run([str(BIN), "server", "stop", "--force"], env=_env(home), capture_output=True, timeout=120)
        cleanup(cdir)
        time.sleep(1)
        left = [c for c, v in components(cdir, home).items() if v]
    figures = {
        "bench": "soak",
        "blue_green": BLUE_GREEN,
        "canaries": CANARIES,
        "wall_s": round(wall, 1),
        "requests": res.requests,
        "client_errors": res.non_2xx + res.connection_errors,
        "non_2xx": res.non_2xx,
        "connection_errors": res.connection_errors,
        "outcomes": dict(sorted(outcomes.items())),
        "client_errors_by_step": dict(sorted(errors_by_step.items())),
        "median_s": {k: round(sorted(v)[len(v) // 2], 1) for k, v in times.items() if v},
        "components_start": start,
        "components_end": end,
        "idle_slots_running_at_end": idle,
        "servers_left_after_stop": left,
    }
    print(
        f"\n{BLUE_GREEN} blue-green + {CANARIES} canaries in {wall:.0f}s; {res.requests} requests, "
        f"{figures['client_errors']} client errors ({res.non_2xx} non-2xx, {res.connection_errors} refused)"
    )
    for k, v in figures["outcomes"].items():
        print(f"  {k}: {v}")
    print(f"  client errors while each kind ran: {dict(errors_by_step)}")
    for name in sorted(set(start) | set(end)):
        print(f"  {name:15} start {start.get(name)}  end {end.get(name)}")
    print(f"  idle slots still running: {idle or 0}; servers left after stop: {left or 0}")
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    main()
