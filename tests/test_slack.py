"""The Slack notifier posts to a (local, real HTTP) webhook and keeps the URL out of messages."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Project
from turnout.errors import BackendError


@pytest.fixture
def webhook():
    got = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/services/T000/B000/secret", got
    srv.shutdown()


def test_posts_wanted_events_only(project: Project, webhook, monkeypatch):
    url, got = webhook
    monkeypatch.setenv("TEST_SLACK_URL", url)
    project.write(project.toml() + '\n[[notifiers]]\nkind = "slack"\nwebhook_url_env = "TEST_SLACK_URL"\n')
    rt = project.runtime()
    slack = rt.notifiers[1][1]
    from turnout.models import DeploymentEvent

    slack.notify(DeploymentEvent(kind="phase.started", environment="staging", message="ignored"))
    slack.notify(
        DeploymentEvent(
            kind="deployment.finished", environment="staging", message="promoted", data={"outcome": "promoted"}
        )
    )
    assert len(got) == 1 and "*staging* deployment.finished: promoted" in got[0]["text"]
    assert "secret" not in got[0]["text"]


def test_missing_variable_is_named(project: Project, monkeypatch):
    monkeypatch.delenv("TEST_SLACK_URL", raising=False)
    project.write(project.toml() + '\n[[notifiers]]\nkind = "slack"\nwebhook_url_env = "TEST_SLACK_URL"\n')
    from turnout.models import DeploymentEvent

    with pytest.raises(BackendError, match=r"\$TEST_SLACK_URL is not set"):
        project.runtime().notifiers[1][1].notify(DeploymentEvent(kind="deployment.started", environment="staging"))
