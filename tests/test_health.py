"""Health checks: every path 2xx within max_response_time, retried until the timeout, fast failure on a crash."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from turnout.health import probe, wait_healthy
from turnout.models import Outcome, SlotStatus


class App:
    """A real HTTP server whose /ready turns 200 after `ready_after` seconds; /slow takes 0.3 s."""

    def __init__(self, ready_after: float = 0.0):
        t0 = time.monotonic()

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/slow":
                    time.sleep(0.3)
                code = 200 if self.path != "/ready" or time.monotonic() - t0 >= ready_after else 503
                if self.path == "/missing":
                    code = 404
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app():
    a = App(ready_after=0.6)
    yield a
    a.close()


running = lambda: SlotStatus(slot="blue", state="running")  # noqa: E731


def test_passes_once_every_path_answers(app):
    v = wait_healthy([app.url], ["/live", "/ready"], max_response_time=1, timeout=10, interval=0.1, status=running)
    assert v.outcome is Outcome.PASS and v.evidence["attempts"] > 1
    assert {c["url"] for c in v.evidence["checks"]} == {app.url + "/live", app.url + "/ready"}
    assert all(c["status"] == 200 for c in v.evidence["checks"])


def test_times_out_with_the_failing_path_named(app):
    v = wait_healthy([app.url], ["/live", "/missing"], max_response_time=1, timeout=0.5, interval=0.1, status=running)
    assert v.outcome is Outcome.FAIL and "/missing: HTTP 404" in v.reason


def test_a_slow_answer_fails(app):
    ok, rows = probe([app.url], ["/slow"], max_response_time=0.1)
    assert not ok and "took" in rows[0]["why"]


def test_a_stopped_release_fails_at_once(app):
    v = wait_healthy(
        [app.url],
        ["/missing"],
        max_response_time=1,
        timeout=60,
        interval=0.1,
        status=lambda: SlotStatus(slot="blue", state="exited", detail="process 1 exited with code 3"),
    )
    assert v.outcome is Outcome.FAIL and "exited with code 3" in v.reason
    assert v.evidence["attempts"] == 1  # no waiting out the 60 s timeout


def test_nothing_listening_is_a_failure_not_a_crash():
    v = wait_healthy(["http://127.0.0.1:9"], ["/"], max_response_time=0.5, timeout=0.3, interval=0.1)
    assert v.outcome is Outcome.FAIL and "ConnectError" in v.reason
