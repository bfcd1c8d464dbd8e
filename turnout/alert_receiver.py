"""`turnout alert-receiver`'s core: an Alertmanager webhook body → Prefect events → `POST /api/events`.

    Alertmanager ──POST /alertmanager──► receiver ──POST /api/events──► Prefect ──automation──► rollback run

This module has no HTTP server (`turnout.alert_server` serves it with uvicorn), so tests drive it directly.
Answers: 200 when every firing alert of a known environment was accepted by Prefect (or there was none);
400 for a body that is not an Alertmanager payload (nothing triggered; Alertmanager does not retry a
4xx); 502 when Prefect did not accept the events, so Alertmanager retries.

Who may post: anyone who can reach the port unless a bearer token is set (`load_token`); it must be set
when the receiver listens beyond loopback. Only a caller that presented the token is told which
environments exist. Everything an alert carries is escaped (`log_field`) before it reaches a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import socket
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import httpx

from turnout.alerts import PayloadError, cut, parse_payload, to_events
from turnout.errors import ConfigError

__all__ = ["AlertReceiver", "known_environments", "load_token", "is_loopback", "log_field", "TOKEN_ENV"]

log = logging.getLogger("turnout.alert_receiver")
TOKEN_ENV = "TURNOUT_ALERT_TOKEN"
MIN_TOKEN_LENGTH = 16
# RFC 6750's b64token: what fits in `Authorization: Bearer ...` without quoting.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_HOW = (
    f"put a token (e.g. `openssl rand -hex 32`) in a file readable only by the receiver and Alertmanager, pass "
    f"--token-file PATH, or set ${TOKEN_ENV}; give Alertmanager the same file as "
    f"http_config.authorization.credentials_file"
)


def known_environments(config_dir: Path) -> set[str]:
    """The environments with a file in `config_dir` (an alert for any other is logged and dropped)."""
    return {p.stem for p in Path(config_dir).glob("*.toml")}


def log_field(value: object, limit: int = 200) -> str:
    """`value` made safe for one log line: control, format and line-separator characters and backslashes
    escaped (a newline in an alert name cannot start a forged line), cut to `limit` characters."""
    text = cut(str(value), limit)
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii") if ch in "\n\r\t" else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def is_loopback(host: str) -> bool:
    """True when `host` is a loopback address (127.0.0.0/8, ::1) or `localhost` resolving only to loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host != "localhost":
        return False  # a name may resolve anywhere (and differently tomorrow): treat it as beyond loopback
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def load_token(token_file: str | os.PathLike | None, environ: Mapping[str, str], *, listen_host: str) -> str | None:
    """The bearer token from `token_file` or `$TURNOUT_ALERT_TOKEN` (surrounding whitespace stripped, as
    Alertmanager strips its credentials_file), or None when neither is set and `listen_host` is loopback.

    Raises ConfigError (exit 2) for both sources at once, an unreadable/empty file, a token too short or
    with characters a bearer token cannot carry, and for no token when `listen_host` is beyond loopback.
    """
    from_env = environ.get(TOKEN_ENV, "").strip() or None
    if token_file is not None and from_env is not None:
        raise ConfigError(f"the alert token is given twice (--token-file and ${TOKEN_ENV}): keep one")
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read --token-file {token_file}: {getattr(e, 'strerror', None) or e}") from None
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty: {_HOW}")
        where = f"--token-file {token_file}"
    elif from_env is not None:
        token, where = from_env, f"${TOKEN_ENV}"
    else:
        if not is_loopback(listen_host):
            raise ConfigError(
                f"--listen {listen_host} is not a loopback address, so a bearer token is required "
                f"(anyone who reaches the port could roll back any environment): {_HOW}"
            )
        return None
    if len(token) < MIN_TOKEN_LENGTH or not _TOKEN_CHARS.fullmatch(token):
        # never echo the token itself
        raise ConfigError(
            f"the alert token in {where} must be at least {MIN_TOKEN_LENGTH} characters of "
            f"A-Z a-z 0-9 - . _ ~ + / (e.g. `openssl rand -hex 32`)"
        )
    return token


class AlertReceiver:
    """Turns one webhook body into Prefect events and posts them; checks the bearer token.

    No server here: `turnout.alert_server.AlertServer` calls `authenticated` and `handle` for each request.
    `close()` releases the HTTP client.
    """

    def __init__(
        self,
        prefect_api_url: str,
        environments: set[str],
        *,
        environment_label: str = "environment",
        token: str | None = None,
        timeout: float = 5.0,
    ):
        self.prefect_api_url = prefect_api_url.rstrip("/")
        self.environments = frozenset(environments)
        self.environment_label = environment_label
        # Only a digest is kept and compared: equal lengths, so the comparison time says nothing about the token.
        self._token_digest = hashlib.sha256(token.encode()).digest() if token else None
        headers = (
            {"Authorization": f"Bearer {os.environ['PREFECT_API_KEY']}"} if os.environ.get("PREFECT_API_KEY") else {}
        )
        self.client = httpx.Client(timeout=timeout, headers=headers)

    @property
    def requires_token(self) -> bool:
        """Whether a caller must present the bearer token (one was configured)."""
        return self._token_digest is not None

    def authenticated(self, authorization: str | None) -> bool:
        """True when the `Authorization` header carries the configured bearer token (constant time);
        False for a missing or wrong one, and always False when no token is configured."""
        if self._token_digest is None or not authorization:
            return False
        scheme, _, given = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def handle(self, body: bytes, *, authenticated: bool = False) -> tuple[int, dict]:
        """Handle one webhook body: (HTTP status, JSON answer). `authenticated` callers are also told the
        known environments when an alert names another one."""
        try:
            payload = parse_payload(body)
        except PayloadError as e:
            log.warning("refused a webhook call: %s", log_field(e))
            return 400, {"error": str(e)}
        events, skipped = to_events(payload, set(self.environments), self.environment_label)
        for line in skipped:
            log.info("not triggering: %s", log_field(line))
        answer: dict = {"skipped": skipped}
        label = self.environment_label
        if authenticated and any(
            a.labels.get(label) not in (None, "", *self.environments) for a in payload.alerts if a.status == "firing"
        ):
            answer["known_environments"] = sorted(self.environments)
        if not events:
            return 200, {"accepted": 0, **answer}
        try:
            r = self.client.post(f"{self.prefect_api_url}/events", json=events)
        except httpx.HTTPError as e:
            log.error(
                "Prefect at %s is unreachable (%s): answering 502 so Alertmanager retries",
                self.prefect_api_url,
                type(e).__name__,
            )
            return 502, {"error": f"Prefect API unreachable: {type(e).__name__}: {e}"}
        if r.status_code >= 300:
            log.error(
                "Prefect refused %d event(s): HTTP %s %s; answering 502 so Alertmanager retries",
                len(events),
                r.status_code,
                log_field(r.text),
            )
            return 502, {"error": f"Prefect answered HTTP {r.status_code}", "detail": r.text[:500]}
        for event in events:
            log.info(
                "firing alert %s for %s -> Prefect event %s",
                log_field(event["resource"]["alertname"]),
                log_field(event["resource"]["turnout.environment"]),
                event["id"],
            )
        return 200, {"accepted": len(events), **answer, "events": [e["id"] for e in events]}

    def close(self) -> None:
        """Release the HTTP client (its pooled connections to Prefect)."""
        self.client.close()
