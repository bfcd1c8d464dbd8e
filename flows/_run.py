"""Running a flow from Python (the CLI, the demo, the tests): its outcome whether it succeeded or not."""

from __future__ import annotations

import asyncio
from typing import Any

from turnout.outcome import DeploymentFailed

__all__ = ["run_flow"]


def run_flow(flow: Any, **params: Any) -> dict[str, Any]:
    """Run an async flow and return its outcome dict; a flow that ended Failed still returns its outcome.

    Anything else the flow raised (a ConfigError from its inputs, a bug) is raised again here.
    """
    state = asyncio.run(flow(**params, return_state=True))
    result = state.result(raise_on_failure=False)
    if isinstance(result, DeploymentFailed):
        return result.outcome
    if isinstance(result, BaseException):
        raise result
    return result
