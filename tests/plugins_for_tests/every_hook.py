"""A plugin implementing every hook in turnout.hookspecs, for the contract tests."""

from __future__ import annotations

from pydantic import BaseModel

import turnout
from turnout.interfaces import Registration
from turnout.models import Outcome, Phase, Verdict
from turnout.plugins.nginx import NginxConfig, NginxRouter
from turnout.plugins.process import ProcessConfig, ProcessTarget

EVENTS: list = []
NOTIFIED: list = []


class Empty(BaseModel):
    pass


class ConstantMetrics:
    def __init__(self, config, environment):
        pass

    def validate(self):
        pass

    def check_series(self, slot, endpoints, fresh=False):
        pass

    def begin(self, slot, endpoints):
        pass

    def measure(self, slot, endpoints):
        from turnout.metrics import SlotMetrics

        return SlotMetrics(slot=slot, window=10, requests=100, errors=0, buckets=[(0.01, 100), (float("inf"), 100)])


class AlwaysPass:
    def __init__(self, config, environment):
        self.phases = {Phase.PRE_DEPLOY}

    def evaluate(self, phase, context):
        return Verdict(gate="always-pass", phase=phase, outcome=Outcome.PASS, reason="always")


class Memory:
    def __init__(self, config, environment):
        pass

    def notify(self, event):
        NOTIFIED.append(event)


@turnout.hookimpl
def register_routers():
    return [Registration("nginx-again", NginxConfig, NginxRouter, "the NGINX router under another name")]


@turnout.hookimpl
def register_targets():
    return [Registration("process-again", ProcessConfig, ProcessTarget, "the process target under another name")]


@turnout.hookimpl
def register_metrics_providers():
    return [Registration("constant", Empty, ConstantMetrics, "always the same numbers")]


@turnout.hookimpl
def register_gates():
    return [Registration("always-pass", Empty, AlwaysPass, "passes")]


@turnout.hookimpl
def register_notifiers():
    return [Registration("memory", Empty, Memory, "keeps events in a list")]


@turnout.hookimpl
def deployment_event(event):
    EVENTS.append(event)
