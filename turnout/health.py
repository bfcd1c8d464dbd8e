"""Health checks of a slot: every configured path must answer 2xx within `max_response_time`.

Plain Python (no Prefect) so the logic is tested directly. `wait_healthy` retries with backoff
until a deadline, but fails at once when the target says the release is no longer running: a
crashed release does not make anyone wait five minutes.
"""

from __future__ import annotations

import time
from typing import Callable

import httpx

from turnout.models import Outcome, Phase, SlotStatus, Verdict

__all__ = ["probe", "wait_healthy"]


def probe(base_urls: list[str], paths: list[str], max_response_time: float,
          client: httpx.Client | None = None) -> tuple[bool, list[dict]]:
    """One round of checks; returns (all passed, one evidence row per URL and path)."""
    own = client is None
    client = client or httpx.Client(timeout=max(2.0, max_response_time * 2), headers={"Connection": "close"})
    rows, ok = [], True
    try:
        for base in base_urls:
            for path in paths:
                url = base.rstrip("/") + path
                t0 = time.perf_counter()
                try:
                    r = client.get(url)
                    dt = time.perf_counter() - t0
                    passed = 200 <= r.status_code < 300 and dt <= max_response_time
                    why = "" if passed else (f"HTTP {r.status_code}" if not 200 <= r.status_code < 300
                                             else f"took {dt:.3f}s > {max_response_time:g}s")
                    rows.append({"url": url, "status": r.status_code, "seconds": round(dt, 4), "ok": passed, "why": why})
                except httpx.HTTPError as e:
                    dt = time.perf_counter() - t0
                    passed = False
                    rows.append({"url": url, "status": None, "seconds": round(dt, 4), "ok": False,
                                 "why": f"{type(e).__name__}: {e}" or type(e).__name__})
                ok = ok and passed
    finally:
        if own:
            client.close()
    return ok, rows


def wait_healthy(
    base_urls: list[str],
    paths: list[str],
    *,
    max_response_time: float,
    timeout: float,
    interval: float = 0.5,
    status: Callable[[], SlotStatus] | None = None,
    phase: Phase = Phase.PRE_TRAFFIC,
    gate: str = "health",
    on_attempt: Callable[[int, list[dict]], None] | None = None,
) -> Verdict:
    """Probe until every path passes (PASS), the target stops running (FAIL), or `timeout` (FAIL)."""
    start = time.monotonic()
    attempt, delay, rows = 0, interval, []
    with httpx.Client(timeout=max(2.0, max_response_time * 2), headers={"Connection": "close"}) as client:
        while True:
            attempt += 1
            if status is not None:
                st = status()
                if not st.running:
                    return Verdict(gate=gate, phase=phase, outcome=Outcome.FAIL,
                                   reason=f"the release is not running: {st.detail or st.state}",
                                   evidence={"attempts": attempt, "seconds": round(time.monotonic() - start, 3),
                                             "target_state": st.state, "checks": rows})
            ok, rows = probe(base_urls, paths, max_response_time, client)
            if on_attempt:
                on_attempt(attempt, rows)
            elapsed = time.monotonic() - start
            if ok:
                return Verdict(gate=gate, phase=phase, outcome=Outcome.PASS,
                               reason=f"{len(rows)} checks passed after {attempt} attempt(s)",
                               evidence={"attempts": attempt, "seconds": round(elapsed, 3), "checks": rows})
            remaining = timeout - elapsed
            if remaining <= 0:
                failing = "; ".join(f"{r['url']}: {r['why']}" for r in rows if not r["ok"])
                return Verdict(gate=gate, phase=phase, outcome=Outcome.FAIL,
                               reason=f"not healthy after {timeout:g}s ({attempt} attempts): {failing}",
                               evidence={"attempts": attempt, "seconds": round(elapsed, 3), "checks": rows})
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)
