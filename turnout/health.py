"""Health checks of a slot: every configured path must answer 2xx within `max_response_time`.

Plain Python (no Prefect) so the logic is tested directly. `wait_healthy` retries with backoff
until a deadline, but fails at once when the target says the release is no longer running: a
crashed release does not make anyone wait five minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
from pydantic import BaseModel, ConfigDict, Field

from turnout.models import Outcome, Phase, SlotStatus, Verdict

if TYPE_CHECKING:
    from turnout.config import Environment
    from turnout.interfaces import GateContext

__all__ = ["probe", "wait_healthy", "http_client", "HealthGateConfig", "HealthGate", "HEALTH_GATE"]

_SSL_CONTEXT = None


def http_client(timeout: float, **kwargs) -> httpx.Client:
    """An httpx.Client for turnout's own probes, sharing one SSL context across clients.

    httpx builds a new SSL context (loading the CA bundle) for every client: 20-200 ms each, paid
    several times per deployment for plain-HTTP probes of 127.0.0.1 otherwise.
    """
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        import ssl

        _SSL_CONTEXT = ssl.create_default_context()
    return httpx.Client(timeout=timeout, verify=_SSL_CONTEXT, **kwargs)


def probe(
    base_urls: list[str], paths: list[str], max_response_time: float, client: httpx.Client | None = None
) -> tuple[bool, list[dict]]:
    """One round of checks; returns (all passed, one evidence row per URL and path)."""
    own = client is None
    client = client or http_client(max(2.0, max_response_time * 2), headers={"Connection": "close"})
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
                    why = (
                        ""
                        if passed
                        else (
                            f"HTTP {r.status_code}"
                            if not 200 <= r.status_code < 300
                            else f"took {dt:.3f}s > {max_response_time:g}s"
                        )
                    )
                    rows.append(
                        {"url": url, "status": r.status_code, "seconds": round(dt, 4), "ok": passed, "why": why}
                    )
                except httpx.HTTPError as e:
                    dt = time.perf_counter() - t0
                    passed = False
                    rows.append(
                        {
                            "url": url,
                            "status": None,
                            "seconds": round(dt, 4),
                            "ok": False,
                            "why": f"{type(e).__name__}: {e}",
                        }
                    )
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
    attempt, delay = 0, interval
    rows: list[dict] = []
    with http_client(max(2.0, max_response_time * 2), headers={"Connection": "close"}) as client:
        while True:
            attempt += 1
            if status is not None:
                st = status()
                if not st.running:
                    return Verdict(
                        gate=gate,
                        phase=phase,
                        outcome=Outcome.FAIL,
                        reason=f"the release is not running: {st.detail or st.state}",
                        evidence={
                            "attempts": attempt,
                            "seconds": round(time.monotonic() - start, 3),
                            "target_state": st.state,
                            "checks": rows,
                        },
                    )
            ok, rows = probe(base_urls, paths, max_response_time, client)
            if on_attempt:
                on_attempt(attempt, rows)
            elapsed = time.monotonic() - start
            if ok:
                return Verdict(
                    gate=gate,
                    phase=phase,
                    outcome=Outcome.PASS,
                    reason=f"{len(rows)} checks passed after {attempt} attempt(s)",
                    evidence={"attempts": attempt, "seconds": round(elapsed, 3), "checks": rows},
                )
            remaining = timeout - elapsed
            if remaining <= 0:
                failing = "; ".join(f"{r['url']}: {r['why']}" for r in rows if not r["ok"])
                return Verdict(
                    gate=gate,
                    phase=phase,
                    outcome=Outcome.FAIL,
                    reason=f"not healthy after {timeout:g}s ({attempt} attempts): {failing}",
                    evidence={"attempts": attempt, "seconds": round(elapsed, 3), "checks": rows},
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)


#: The health gate's name in verdicts and under `[[gates]] kind`.
HEALTH_GATE = "health"


class HealthGateConfig(BaseModel):
    """`[[gates]]` settings for `kind = "health"`; unset keys come from `[health]`."""

    model_config = ConfigDict(extra="forbid")

    phases: list[Phase] = Field(default_factory=lambda: [Phase.PRE_TRAFFIC])
    paths: list[str] | None = None
    timeout: float | None = Field(None, gt=0)
    max_response_time: float | None = Field(None, gt=0)


class HealthGate:
    """The `[health]` checks as a gate: waits for every health path of the slot to pass.

    Core, not only a plugin: every deployment runs it before a slot takes traffic and after the
    switch, built by the runtime, so restricting the loaded plugins can never remove it.
    """

    def __init__(self, config: HealthGateConfig, environment: Environment):
        self.config = config
        self.environment = environment
        self.phases = set(config.phases)

    def evaluate(self, phase: Phase, context: GateContext) -> Verdict:
        """PASS when every path answers 2xx in time; FAIL on timeout or a stopped release."""
        h = self.environment.health
        return wait_healthy(
            context.base_urls,
            self.config.paths or h.paths,
            max_response_time=self.config.max_response_time or h.max_response_time,
            timeout=context.timeout or self.config.timeout or h.timeout,
            interval=h.interval,
            status=lambda: context.target.status(context.slot),
            phase=phase,
            gate=HEALTH_GATE,
        )
