"""The demo service's application: routes, behaviours per release, Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import tomllib
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

RELEASES_FILE = Path(os.environ.get("DEMO_RELEASES_FILE", Path(__file__).resolve().parent.parent / "releases.toml"))
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def behaviour(release: str) -> dict:
    """The behaviour of `release` (an image `name:tag` or a bare tag) from releases.toml."""
    tag = release.rsplit(":", 1)[-1]
    table = tomllib.loads(RELEASES_FILE.read_text())
    return {"greeting": f"hello from {tag}", **table.get(tag, {})}


def create_app(release: str, slot: str = ""):
    """Build the app for one release."""
    b = behaviour(release)
    started = time.monotonic()
    registry = CollectorRegistry()
    requests_total = Counter(
        "http_requests_total", "HTTP requests", ["release", "slot", "method", "path", "code"], registry=registry
    )
    duration = Histogram(
        "http_request_duration_seconds", "Request latency", ["release", "slot"], buckets=BUCKETS, registry=registry
    )
    headers = {"X-Release": release, "X-Slot": slot}

    async def root(request: Request) -> Response:
        return PlainTextResponse(b["greeting"] + "\n", headers=headers)

    fault: dict = {}  # set at run time through POST /admin/fault (the tests' way to make a live release go bad)

    def current(key: str, default: float = 0.0) -> float:
        """A behaviour value now: a fault set at run time, then `bad_*` once `bad_after` passed, then the release's."""
        if key in fault:
            return float(fault[key])
        if b.get("bad_after") is not None and time.monotonic() - started >= float(b["bad_after"]):
            if f"bad_{key}" in b:
                return float(b[f"bad_{key}"])
        return float(b.get(key, default))

    async def items(request: Request) -> Response:
        if current("latency"):
            await asyncio.sleep(current("latency"))
        if random.random() < current("error_rate"):
            return JSONResponse({"error": "injected failure"}, status_code=500, headers=headers)
        return JSONResponse({"release": release, "items": [1, 2, 3]}, headers=headers)

    async def echo(request: Request) -> Response:
        return JSONResponse(
            {"release": release, "body": (await request.body()).decode(errors="replace")}, headers=headers
        )

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "live", "release": release}, headers=headers)

    async def ready(request: Request) -> Response:
        ok = (
            b.get("ready", True)
            and bool(current("ready", 1.0))
            and time.monotonic() - started >= float(b.get("start_delay", 0))
        )
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "release": release},
            status_code=200 if ok else 503,
            headers=headers,
        )

    async def set_fault(request: Request) -> Response:
        """Change this process's behaviour now: {"error_rate": 0.5, "latency": 2, "ready": 0}; {} clears it."""
        body = await request.json()
        if not isinstance(body, dict) or not all(k in ("error_rate", "latency", "ready") for k in body):
            return JSONResponse({"error": "keys: error_rate, latency, ready"}, status_code=400)
        fault.clear()
        fault.update({k: float(v) for k, v in body.items()})
        return JSONResponse({"fault": fault, "release": release}, headers=headers)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/", root),
            Route("/api/items", items),
            Route("/api/echo", echo, methods=["POST"]),
            Route("/health/live", live),
            Route("/health/ready", ready),
            Route("/metrics", metrics),
            Route("/admin/fault", set_fault, methods=["POST"]),
        ]
    )

    async def measured(scope, receive, send):
        """ASGI wrapper counting every request (but /metrics) by status code, and timing it."""
        if scope["type"] != "http" or scope["path"] == "/metrics":
            return await app(scope, receive, send)
        t0, code = time.perf_counter(), [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                code[0] = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            duration.labels(release, slot).observe(time.perf_counter() - t0)
            requests_total.labels(release, slot, scope["method"], scope["path"], str(code[0])).inc()

    return measured


def main(release: str, host: str, port: int, slot: str = "") -> None:
    """Serve `release` on host:port until SIGTERM."""
    import uvicorn

    if behaviour(release).get("crash_on_start"):
        print(f"demo_app {release}: crashing at start as releases.toml asks", file=sys.stderr)
        sys.exit(3)
    uvicorn.run(
        create_app(release, slot), host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=75
    )
