"""`turnout alert-receiver`: an Alertmanager webhook receiver that turns firing alerts into Prefect events.

    Alertmanager ──POST /alertmanager──► receiver ──POST /api/events──► Prefect ──automation──► rollback run

Answers: 200 when every firing alert of a known environment was accepted by Prefect (or there was none);
400 for a body that is not an Alertmanager payload (nothing triggered; Alertmanager does not retry a
4xx); 502 when Prefect did not accept the events, so Alertmanager retries. `GET /-/healthy` says 200.
"""

from __future__ import annotations

import json
import logging
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from turnout.alerts import PayloadError, parse_payload, to_events

__all__ = ["AlertReceiver", "known_environments"]

log = logging.getLogger("turnout.alert_receiver")
MAX_BODY = 1 << 20


def known_environments(config_dir: Path) -> set[str]:
    """The environments with a file in `config_dir` (an alert for any other is logged and dropped)."""
    return {p.stem for p in Path(config_dir).glob("*.toml")}


class AlertReceiver(ThreadingHTTPServer):
    """The HTTP server; `serve_forever()` to run, `shutdown()` to stop."""

    daemon_threads = True

    def __init__(self, listen: tuple[str, int], prefect_api_url: str, environments: set[str],
                 environment_label: str = "environment", timeout: float = 5.0):
        self.prefect_api_url = prefect_api_url.rstrip("/")
        self.environments = environments
        self.environment_label = environment_label
        headers = {"Authorization": f"Bearer {os.environ['PREFECT_API_KEY']}"} if os.environ.get("PREFECT_API_KEY") else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)
        super().__init__(listen, _Handler)

    def forward(self, body: bytes) -> tuple[int, dict]:
        """Handle one webhook body: (HTTP status, JSON answer)."""
        try:
            payload = parse_payload(body)
        except PayloadError as e:
            log.warning("refused a webhook call: %s", e)
            return 400, {"error": str(e)}
        events, skipped = to_events(payload, self.environments, self.environment_label)
        for line in skipped:
            log.info("not triggering: %s", line)
        if not events:
            return 200, {"accepted": 0, "skipped": skipped}
        try:
            r = self.client.post(f"{self.prefect_api_url}/events", json=events)
        except httpx.HTTPError as e:
            log.error("Prefect at %s is unreachable (%s): answering 502 so Alertmanager retries",
                      self.prefect_api_url, type(e).__name__)
            return 502, {"error": f"Prefect API unreachable: {type(e).__name__}: {e}"}
        if r.status_code >= 300:
            log.error("Prefect refused %d event(s): HTTP %s %s; answering 502 so Alertmanager retries",
                      len(events), r.status_code, r.text[:200])
            return 502, {"error": f"Prefect answered HTTP {r.status_code}", "detail": r.text[:500]}
        for e in events:
            log.info("firing alert %s for %s -> Prefect event %s", e["resource"]["alertname"],
                     e["resource"]["turnout.environment"], e["id"])
        return 200, {"accepted": len(events), "skipped": skipped, "events": [e["id"] for e in events]}


class _Handler(BaseHTTPRequestHandler):
    server: AlertReceiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") not in ("", "/alertmanager"):
            return self._answer(404, {"error": f"no such path {self.path}; Alertmanager posts to /alertmanager"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._answer(400, {"error": "bad Content-Length"})
        if length > MAX_BODY:
            return self._answer(413, {"error": f"body larger than {MAX_BODY} bytes"})
        status, answer = self.server.forward(self.rfile.read(length))
        self._answer(status, answer)

    def do_GET(self) -> None:  # noqa: N802
        if self.path in ("/-/healthy", "/-/ready"):
            return self._answer(200, {"status": "ok", "environments": sorted(self.server.environments)})
        self._answer(404, {"error": "POST alerts to /alertmanager"})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s " + fmt, self.client_address[0], *args)
