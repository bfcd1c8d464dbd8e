"""Alertmanager webhook payloads → Prefect events (plain Python; the HTTP server is turnout.alert_receiver).

Prefect OSS has no webhook endpoint, and `POST /api/events` needs each event's resource to carry a
`prefect.resource.id` (the server refuses the event otherwise), so Alertmanager's fixed JSON is
translated: one event per *firing* alert, named `turnout.alert.firing`, whose resource carries the
environment and the alert's labels. A rollback deployment's trigger matches `turnout.environment`;
resolved alerts never trigger anything.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from turnout.models import utcnow

__all__ = ["AlertmanagerPayload", "Alert", "parse_payload", "to_events", "cut", "EVENT_FIRING", "PayloadError"]

EVENT_FIRING = "turnout.alert.firing"
ECHO_LIMIT = 120  # a label value quoted back in an answer or a log line is cut to this many characters


def cut(value: str, limit: int = ECHO_LIMIT) -> str:
    """`value`, cut to `limit` characters with a note of how much was left off (for echoing input back)."""
    return value if len(value) <= limit else f"{value[:limit]}...(+{len(value) - limit} chars)"


class PayloadError(ValueError):
    """The body is not an Alertmanager webhook payload (answered 400: retrying will not help)."""


class Alert(BaseModel):
    """One alert in an Alertmanager notification."""

    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""

    def key(self) -> str:
        """Alertmanager's fingerprint, or a stable hash of the labels when it is missing."""
        if self.fingerprint:
            return self.fingerprint
        text = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class AlertmanagerPayload(BaseModel):
    """The webhook body Alertmanager sends (version 4)."""

    model_config = ConfigDict(extra="allow")

    version: str
    status: Literal["firing", "resolved"]
    alerts: list[Alert]
    receiver: str = ""
    groupKey: str = ""
    externalURL: str = ""


def parse_payload(body: bytes) -> AlertmanagerPayload:
    """Validate a webhook body; raise PayloadError saying what is wrong."""
    try:
        payload = AlertmanagerPayload.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = cut(".".join(str(p) for p in first["loc"]) or "body")  # loc holds the sender's keys
        raise PayloadError(f"not an Alertmanager webhook payload: {where}: {first['msg']}") from None
    if payload.version != "4":
        raise PayloadError(f'unsupported Alertmanager payload version {cut(payload.version)!r} (expected "4")')
    return payload


def to_events(
    payload: AlertmanagerPayload, known: set[str], environment_label: str = "environment"
) -> tuple[list[dict[str, Any]], list[str]]:
    """Prefect events for the firing alerts of known environments, and one line per alert skipped.

    A skipped line quotes the alert's own name and environment label (cut), never the known environments:
    the caller may not be entitled to that list (the receiver adds it for an authenticated caller).
    """
    events, skipped = [], []
    for alert in payload.alerts:
        name = alert.labels.get("alertname", "unnamed")
        env = alert.labels.get(environment_label)
        if alert.status != "firing":
            skipped.append(f"{cut(name)}: resolved (resolved alerts never trigger)")
            continue
        if not env:
            skipped.append(f"{cut(name)}: no {environment_label!r} label")
            continue
        if env not in known:
            skipped.append(f"{cut(name)}: unknown environment '{cut(env)}'")
            continue
        resource = {
            "prefect.resource.id": f"turnout.alert.{alert.key()}",
            "prefect.resource.name": name,
            "turnout.environment": env,
            "alertname": name,
            "severity": alert.labels.get("severity", ""),
            "release": alert.labels.get("release", ""),
        }
        events.append(
            {
                "id": str(uuid.uuid4()),
                "occurred": utcnow().isoformat(),
                "event": EVENT_FIRING,
                "resource": resource,
                "payload": {
                    "labels": alert.labels,
                    "annotations": alert.annotations,
                    "startsAt": alert.startsAt,
                    "generatorURL": alert.generatorURL,
                    "receiver": payload.receiver,
                },
            }
        )
    return events, skipped
