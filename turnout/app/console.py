"""Live progress on the terminal: a plugin object that prints each deployment event as one line."""

from __future__ import annotations

import sys

import turnout
from turnout.models import DeploymentEvent

__all__ = ["ConsoleReporter"]

_SKIP = {"deployment.finished"}  # the CLI prints the outcome itself


class ConsoleReporter:
    """Registered by the CLI on the plugin manager; prints `time env phase message`."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    @turnout.hookimpl
    def deployment_event(self, event: DeploymentEvent) -> None:
        """Print one line per event."""
        if event.kind in _SKIP:
            return
        phase = event.phase or event.kind.split(".")[0]
        print(f"{event.at:%H:%M:%S} {event.environment:<10} {phase:<12} {event.message}", file=self.stream, flush=True)
