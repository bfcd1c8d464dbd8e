"""Benchmark: time to rollback, three ways (the operator guide's figure to beat: 2-3 minutes).

(a) turnout's own watch: a promoted release turns bad (50% 5xx, set at a known instant through the demo
    service's /admin/fault) under a bounded load; from that instant to traffic 100% on the warm old slot.
    Breakdown: detection (to the watch's rollback verdict), snapshot + router, verification.
(b) an alert posted to `turnout alert-receiver`: to the rollback flow running (through a real Prefect
    server, its automation and a process worker polling every second) and to traffic restored.
(c) the router part alone: NGINX reload + verification of 100% to the other slot.

Everything on 127.0.0.1; the load is bounded in requests and seconds. Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _project import ROOT, cleanup, make_project

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
INTERVAL = float(os.environ.get("BENCH_WATCH_INTERVAL", "1"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A Prefect server of our own for (b), started before Prefect is imported so every client uses it.
PREFECT_HOME = tempfile.mkdtemp(prefix="turnout-bench-prefect-")
PREFECT_PORT = _free_port()
os.environ.update(
    {
        "PREFECT_HOME": PREFECT_HOME,
        "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
    }
)

import httpx  # noqa: E402

import turnout  # noqa: E402
from turnout.loadgen import Load  # noqa: E402


class Clock:
    """Monotonic times of the events that matter, through the broadcast hook."""

    def __init__(self):
        self.marks: list[tuple[str, str | None, float, dict]] = []

    @turnout.hookimpl
    def deployment_event(self, event):
        self.marks.append((event.kind, event.phase, time.monotonic(), event.data))

    def first(self, kind: str, phase: str | None = None, after: float = 0.0, **data) -> float | None:
        for k, p, t, d in self.marks:
            if (
                k == kind
                and (phase is None or p == phase)
                and t >= after
                and all(d.get(x) == v for x, v in data.items())
            ):
                return t
        return None


def _start_prefect() -> subprocess.Popen:
    log = open(Path(PREFECT_HOME) / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(PREFECT_PORT),
            "--no-ui",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_API_URL": ""},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(os.environ["PREFECT_API_URL"] + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("prefect server did not start")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.send_signal(2)
            proc.wait(10)


def _when(pred, then, timeout: float = 60) -> threading.Thread:
    def wait():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                then()
                return
            time.sleep(0.05)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    return t


def bench_watch(cdir: Path, url: str, slots: dict[str, str], clock: Clock) -> list[dict]:
    """(a): promote v2 with a watch, make it bad, time the rollback."""
    from turnout.flows import blue_green

    rows = []
    for i in range(RUNS):
        assert (
            blue_green.run(environment="bench", image="demo:v1", config_dir=str(cdir), watch=0)["outcome"] == "promoted"
        )
        rt_live = _live_slot(cdir)
        new = "green" if rt_live == "blue" else "blue"
        fault_at: list[float] = []

        def make_bad():  # called during this iteration's run, so it sees this iteration's `new` and `fault_at`
            time.sleep(1.5)  # a little clean watch first
            httpx.post(f"http://{slots[new]}/admin/fault", json={"error_rate": 0.5}, timeout=5)  # noqa: B023
            fault_at.append(time.monotonic())  # noqa: B023

        clock.marks.clear()
        load = Load(url + "api/items", connections=4, max_requests=200_000, max_seconds=90).start()
        _when(lambda: clock.first("phase.started", "watch") is not None, make_bad)
        out = blue_green.run(environment="bench", image="demo:v2", config_dir=str(cdir), watch=60)
        load.stop()
        t_bad = fault_at[0]
        t_verdict = clock.first("gate.verdict", "watch", after=t_bad, outcome="fail")
        t_shift0 = clock.first("phase.started", "rollback", after=t_bad)
        t_shifted = clock.first("traffic.shifted", "rollback", after=t_bad)
        row = {
            "outcome": out["outcome"],
            "total_s": round(t_shifted - t_bad, 3),
            "detect_s": round(t_verdict - t_bad, 3),
            "snapshot_s": round(t_shift0 - t_verdict, 3),
            "router_s": round(t_shifted - t_shift0, 3),
        }
        rows.append(row)
        print(f"(a) watch run {i + 1}/{RUNS}: {row}", flush=True)
    return rows


def _live_slot(cdir: Path) -> str:
    from turnout.runtime import open_runtime

    rt = open_runtime("bench", cdir, check=False)
    return rt.router.get_split().live_slots()[0]


def bench_router(cdir: Path) -> list[float]:
    """(c): the router alone, 10 flips of 100% between two running slots."""
    from turnout.flows import blue_green
    from turnout.models import Split
    from turnout.runtime import open_runtime

    out = blue_green.run(environment="bench", image="demo:v5", config_dir=str(cdir), watch=0, keep_old=True)
    assert out["outcome"] == "promoted", out  # both slots running: a flip is the router's work only

    rt = open_runtime("bench", cdir, check=False)
    times = []
    for _ in range(10):
        target = "green" if rt.router.get_split().live_slots()[0] == "blue" else "blue"
        t0 = time.monotonic()
        rt.router.apply(Split.all_to(target), rt.backends())
        rt.router.verify(Split.all_to(target), rt.backends(), None)
        times.append(time.monotonic() - t0)
    print(f"(c) router alone: {[round(t, 3) for t in times]}", flush=True)
    return times


def bench_alert(cdir: Path, url: str) -> list[dict]:
    """(b): a firing alert posted to the receiver → automation → worker → rollback flow → traffic back."""
    from turnout.flows import blue_green

    env = {**os.environ, "PWD": str(ROOT), "TURNOUT_CONFIG_DIR": str(cdir)}
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run(
        [*prefect, "work-pool", "create", "local-process", "--type", "process", "--overwrite"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    # prefect.yaml's rollback deployments trigger on environment "staging"/"production": the bench's
    # environment is "bench", so deploy the same flow with the same trigger shape for it.
    _deploy_bench_rollback(env)
    rport = _free_port()
    api = os.environ["PREFECT_API_URL"]
    logs = Path(PREFECT_HOME)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "turnout.app.cli",
                "alert-receiver",
                "--listen",
                f"127.0.0.1:{rport}",
                "--config-dir",
                str(cdir),
            ],
            stdout=open(logs / "receiver.log", "w"),
            stderr=subprocess.STDOUT,
            env=env,
        ),
        subprocess.Popen(
            [*prefect, "worker", "start", "--pool", "local-process", "--limit", "2"],
            cwd=ROOT,
            stdout=open(logs / "worker.log", "w"),
            stderr=subprocess.STDOUT,
            env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"},
        ),
    ]
    rows = []
    try:
        time.sleep(8)  # the worker's first poll and the receiver's start
        for i in range(RUNS):
            assert (
                blue_green.run(environment="bench", image="demo:v1", config_dir=str(cdir), watch=0)["outcome"]
                == "promoted"
            )
            assert (
                blue_green.run(environment="bench", image="demo:v2", config_dir=str(cdir), watch=0, keep_old=True)[
                    "outcome"
                ]
                == "promoted"
            )
            good = "green" if _live_slot(cdir) == "blue" else "blue"
            payload = {
                "version": "4",
                "status": "firing",
                "receiver": "turnout",
                "alerts": [
                    {
                        "status": "firing",
                        "fingerprint": f"bench{i}{time.time_ns()}",
                        "labels": {"alertname": "TurnoutHighErrorRate", "environment": "bench", "release": "demo:v2"},
                        "annotations": {"summary": "bench"},
                    }
                ],
            }
            t0 = time.monotonic()
            r = httpx.post(f"http://127.0.0.1:{rport}/alertmanager", json=payload, timeout=10)
            t_ack = time.monotonic()
            assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
            t_created = t_running = t_restored = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and t_restored is None:
                runs = httpx.post(
                    f"{api}/flow_runs/filter",
                    json={"flows": {"name": {"any_": ["rollback"]}}, "sort": "START_TIME_DESC", "limit": 1},
                ).json()
                mine = [
                    x
                    for x in runs
                    if x["parameters"].get("reason", "").endswith("bench")
                    and x["expected_start_time"] >= _iso_since(t0)
                ]
                now = time.monotonic()
                if mine and t_created is None:
                    t_created = now
                if mine and mine[0]["state_type"] in ("RUNNING", "COMPLETED") and t_running is None:
                    t_running = now
                if _live_slot(cdir) == good:
                    t_restored = now
                time.sleep(0.1)
            row = {
                "ack_s": round(t_ack - t0, 3),
                "to_run_created_s": round((t_created or t_restored) - t0, 3),
                "to_flow_running_s": round((t_running or t_restored) - t0, 3),
                "to_traffic_restored_s": round(t_restored - t0, 3) if t_restored else None,
            }
            rows.append(row)
            print(f"(b) alert run {i + 1}/{RUNS}: {row}", flush=True)
            time.sleep(2)  # let the run finish and release the lock
    finally:
        for p in procs:
            _stop(p)
    return rows


_WALL_OFFSET = time.time() - time.monotonic()


def _iso_since(mono: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(mono + _WALL_OFFSET - 2, tz=UTC).isoformat()


def _deploy_bench_rollback(env: dict) -> None:
    """The rollback deployment of prefect.yaml, for the bench's environment (same trigger, same limit)."""
    import yaml

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    rollback = next(
        d
        for d in spec["deployments"]
        if d["entrypoint"].endswith("rollback.py:rollback") and d["parameters"]["environment"] == "staging"
    )
    rollback = json.loads(json.dumps(rollback).replace('"staging"', '"bench"'))
    rollback["name"] = "bench"
    rollback["parameters"]["environment"] = "bench"
    spec["deployments"] = [rollback]
    path = Path(PREFECT_HOME) / "prefect.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(f"prefect deploy failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")


def main() -> int:
    from turnout.registry import get_registry

    server = _start_prefect()
    cdir, url = make_project(extra="", rollback=f"watch = 60\ninterval = {INTERVAL}\nmin_requests = 10")
    text = (cdir / "bench.toml").read_text()
    slots = {"blue": text.split('blue = "')[1].split('"')[0], "green": text.split('green = "')[1].split('"')[0]}
    clock = Clock()
    get_registry().pm.register(clock)
    try:
        a = bench_watch(cdir, url, slots, clock)
        c = bench_router(cdir)
        b = bench_alert(cdir, url)
    finally:
        cleanup(cdir)
        _stop(server)

    med = lambda xs: round(statistics.median(xs), 3) if xs else None  # noqa: E731
    summary = {
        "a_watch": {
            "interval_s": INTERVAL,
            "total_s_median": med([r["total_s"] for r in a]),
            "total_s_max": max(r["total_s"] for r in a),
            "detect_s_median": med([r["detect_s"] for r in a]),
            "router_s_median": med([r["router_s"] for r in a]),
            "outcomes": [r["outcome"] for r in a],
        },
        "b_alert": {
            "ack_s_median": med([r["ack_s"] for r in b]),
            "to_flow_running_s_median": med([r["to_flow_running_s"] for r in b]),
            "to_traffic_restored_s_median": med([r["to_traffic_restored_s"] for r in b if r["to_traffic_restored_s"]]),
            "restored": f"{sum(1 for r in b if r['to_traffic_restored_s'])}/{len(b)}",
            "worker_poll_s": 1,
        },
        "c_router": {"median_s": med(c), "max_s": round(max(c), 3)},
    }
    print(
        f"\n(a) watch → traffic on the old slot: median {summary['a_watch']['total_s_median']} s "
        f"(max {summary['a_watch']['total_s_max']} s) with {INTERVAL:g} s measurements; detection median "
        f"{summary['a_watch']['detect_s_median']} s, router median {summary['a_watch']['router_s_median']} s"
    )
    print(
        f"(b) alert → flow running median {summary['b_alert']['to_flow_running_s_median']} s, → traffic restored "
        f"median {summary['b_alert']['to_traffic_restored_s_median']} s ({summary['b_alert']['restored']} restored; "
        f"worker polls every 1 s)"
    )
    print(f"(c) router alone: median {summary['c_router']['median_s']} s, max {summary['c_router']['max_s']} s")
    print(json.dumps({"bench": "rollback_time", **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
