"""The `log` notifier: appends every deployment event as one JSON line to a file (an audit trail)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

import turnout
from turnout.config import Environment
from turnout.interfaces import Registration
from turnout.models import DeploymentEvent

NAME = "log"


class LogNotifierConfig(BaseModel):
    """`[[notifiers]]` settings for `kind = "log"`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field("events.jsonl", description="File to append to, relative to the state directory.")


class LogNotifier:
    """Appends events to a JSON-lines file."""

    def __init__(self, config: LogNotifierConfig, environment: Environment):
        self.path = environment.state_dir / config.path

    def notify(self, event: DeploymentEvent) -> None:
        """Append one line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(event.model_dump(mode="json")) + "\n")


@turnout.hookimpl
def register_notifiers():
    """The log notifier."""
    return [Registration(NAME, LogNotifierConfig, LogNotifier, "append events as JSON lines to a file")]
