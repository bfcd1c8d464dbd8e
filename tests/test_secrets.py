"""Plant unique secrets (a Slack webhook token, a database password, an alert token) and grep every output
of a full run and of its failure paths: they must appear nowhere.

Outputs: every command's stdout and stderr, every file under the project (the ledger, logs, reports,
NGINX's config, the slots' logs), what the Slack webhook received, the Prefect server's flow runs
(parameters) and logs, and the slots' process environments (which must not inherit turnout's secrets).
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import Project, free_port
from test_migrate import database  # noqa: F401  (the PostgreSQL fixture)

pytestmark = [pytest.mark.usefixtures("prefect_server", "nginx"), pytest.mark.timeout(900)]


@pytest.fixture
def webhook():
    got: list[bytes] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(self.rfile.read(int(self.headers["Content-Length"])))  # the body: the URL is the secret itself
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", got
    srv.shutdown()


def _prefect_records(api: str) -> bytes:
    """Every flow run (with its parameters) and every log line the test Prefect server holds."""
    out = b""
    with httpx.Client(base_url=api, timeout=30) as c:
        for path in ("/flow_runs/filter", "/logs/filter"):
            offset = 0
            while True:
                r = c.post(path, json={"limit": 200, "offset": offset})
                r.raise_for_status()
                page = r.json()
                out += r.content
                if len(page) < 200 or offset > 20000:
                    break
                offset += 200
    return out


def test_planted_secrets_appear_in_no_output(project: Project, database, webhook, monkeypatch, prefect_server):
    tag = uuid.uuid4().hex[:12]
    slack_token, password, alert_token = f"xoxb-SLACK{tag}", f"PW{tag}pw", f"ALERT{tag}tok"
    url, got = webhook
    env = {
        "TEST_SLACK_URL": f"{url}/services/T0/B0/{slack_token}",
        "TURNOUT_ALERT_TOKEN": alert_token,
        "APP_DATABASE_URL": database.replace(database.split(":")[2].split("@")[0], password),
    }
    assert password in env["APP_DATABASE_URL"]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    project.extra += (
        '\n[[notifiers]]\nkind = "slack"\nwebhook_url_env = "TEST_SLACK_URL"\n'
        "\n[canary]\nstages = [50, 100]\nduration = 3\ninterval = 1\nmin_requests = 3\n"
        '\n[database]\nurl_env = "APP_DATABASE_URL"\n'
        f'alembic_ini = "{Path(__file__).resolve().parent.parent / "examples/demo_app/alembic.ini"}"\n'
        "backup_before = true\n"
    )
    project.write()
    outputs: list[tuple[str, bytes]] = []
    slot_envs: list[bytes] = []

    def run(*args: str, extra: dict[str, str] | None = None) -> int:
        r = project.cli(*args, "-e", "staging", env=extra)
        outputs.append((" ".join(args), (r.stdout + r.stderr).encode()))
        for f in project.state_dir.glob("slots/*/replica-*.json"):  # the slots' environments, while they run
            try:
                slot_envs.append(Path(f"/proc/{json.loads(f.read_text())['pid']}/environ").read_bytes())
            except (OSError, ValueError, KeyError):
                pass
        return r.returncode

    assert run("blue-green", "--image", "demo:v1", "--json") == 0
    assert run("migrate", "--json") == 0
    assert run("blue-green", "--image", "demo:v2", "--keep-old", "--json") == 0
    assert run("rollback", "--reason", "secret test", "--json") == 0
    assert run("canary", "--image", "demo:v3", "--auto-promote", "--json") == 1  # erroring canary: aborted
    assert run("blue-green", "--image", "demo:v4", "--json") == 1  # never ready: aborted
    assert run("recover", "--json") == 0
    assert run("status") == 0 and run("history") == 0
    bad_db = env["APP_DATABASE_URL"].replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}")
    assert run("migrate", "--json", extra={"APP_DATABASE_URL": bad_db}) == 2  # does not connect: named, redacted
    assert run("blue-green", "--image", "demo:v5", "--json", extra={"APP_DATABASE_URL": bad_db}) == 2
    assert got, "the Slack webhook was never called: the test would prove nothing"

    for path in project.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            outputs.append((str(path.relative_to(project.root)), path.read_bytes()))
    outputs.append(("slack webhook bodies", b"\n".join(got)))
    outputs.append(("Prefect flow runs and logs", _prefect_records(prefect_server)))
    assert len(outputs) > 20
    for secret in (slack_token, password, alert_token):
        leaks = [where for where, data in outputs if secret.encode() in data]
        assert not leaks, f"{secret} leaked into: {leaks}"
    for environ in slot_envs:  # a slot gets only what the environment file names (not Slack, not the alert token)
        assert slack_token.encode() not in environ and alert_token.encode() not in environ
    assert slot_envs, "no slot process was seen"
