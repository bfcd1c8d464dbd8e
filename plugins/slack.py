"""The `slack` notifier: posts deployment events to a Slack incoming webhook (slack-sdk).

The webhook URL is a secret: it is read from the environment variable named by
`webhook_url_env`, never written in the environment file, and never logged.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

import turnout
from turnout.config import Environment
from turnout.errors import BackendError
from turnout.interfaces import Registration
from turnout.models import DeploymentEvent

NAME = "slack"

_ICONS = {
    "promoted": ":white_check_mark:",
    "aborted": ":rewind:",
    "failed": ":rotating_light:",
    "rolled-back": ":leftwards_arrow_with_hook:",
}


class SlackConfig(BaseModel):
    """`[[notifiers]]` settings for `kind = "slack"`."""

    model_config = ConfigDict(extra="forbid")

    webhook_url_env: str = Field("SLACK_WEBHOOK_URL", description="Environment variable holding the webhook URL.")
    events: list[str] = Field(
        default_factory=lambda: ["deployment.started", "deployment.finished"],
        description="Event kinds to post (others are ignored).",
    )
    timeout: int = Field(5, gt=0)


class SlackNotifier:
    """Posts chosen events to a webhook."""

    def __init__(self, config: SlackConfig, environment: Environment):
        self.config = config
        self.environment = environment

    def notify(self, event: DeploymentEvent) -> None:
        """Post one event if its kind is wanted (urgent ones always); raise BackendError when Slack refuses it."""
        if event.kind not in self.config.events and not event.urgent:
            return
        url = os.environ.get(self.config.webhook_url_env)
        if not url:
            raise BackendError(f"slack notifier: ${self.config.webhook_url_env} is not set")
        from slack_sdk.webhook import WebhookClient

        outcome = event.data.get("outcome", "")
        icon = ":rotating_light: <!here>" if event.urgent else _ICONS.get(outcome, ":rocket:")
        text = f"{icon} *{event.environment}* {event.kind}: {event.message}"
        resp = WebhookClient(url, timeout=self.config.timeout).send(text=text)
        if resp.status_code >= 300:
            raise BackendError(f"slack notifier: webhook answered HTTP {resp.status_code}")


@turnout.hookimpl
def register_notifiers():
    """The Slack notifier."""
    return [Registration(NAME, SlackConfig, SlackNotifier, "post events to a Slack incoming webhook")]
