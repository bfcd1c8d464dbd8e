"""A run's inputs, resolved once into one typed object that the command line and the flows share.

`blue_green_inputs` and `canary_inputs` open the environment and check everything a deployment needs
before anything moves: the state directory takes writes, the database answers, the canary settings with
the run's overrides, the metrics source and the series it reads, the judge, the watch length.
`rollback_inputs` checks what a rollback can refuse without the lock. A problem is a ConfigError
(exit 2), with nothing touched.

`turnout blue-green`, `turnout canary` and `turnout rollback` resolve their inputs before Prefect starts
(a bad option creates no flow run) and hand the object to the flow they run in the same process
(`handing_over`); the flow asks for its inputs with the same function, which takes the handed-over
object when the flow's parameters are the ones it was resolved to, so the checks run once. A run
started anywhere else (the Prefect UI, a deployment, a schedule, an alert) resolves inside the flow, once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from turnout.config import CanaryConfig
from turnout.database.connect import open_database
from turnout.errors import ConfigError
from turnout.interfaces import Judge, MetricsProvider
from turnout.rollback import precheck_rollback
from turnout.runtime import Runtime, open_runtime

__all__ = ["RollbackInputs", "RunInputs", "blue_green_inputs", "canary_inputs", "handing_over", "rollback_inputs"]


@dataclass(kw_only=True)
class RunInputs:
    """Everything one blue-green or canary run works with, resolved and checked once.

    `watch` is in seconds (the run's `--watch`, else `[rollback] watch`; 0 skips the watch). `provider`
    is the metrics source the canary's analysis and the watch read, None when nothing reads metrics.
    `canary` holds the stages, duration and interval after the run's overrides (canary runs only).
    """

    rt: Runtime
    release: str
    config_dir: str | None = None
    health_check_timeout: float | None = None
    keep_old: bool = False
    watch: float = 0.0
    provider: MetricsProvider | None = None
    traffic_switch_delay: float = 0.0
    canary: CanaryConfig | None = None
    judge: Judge | None = None
    auto_promote: bool = False
    promote_now: bool = False
    approval_timeout: float = 3600.0

    @property
    def strategy(self) -> Literal["blue-green", "canary"]:
        """Which flow these inputs are for: a canary has its stages."""
        return "blue-green" if self.canary is None else "canary"

    @property
    def environment(self) -> str:
        """The environment's name."""
        return self.rt.name

    def flow_parameters(self) -> dict[str, Any]:
        """The flow's keyword arguments for this run (resolving them again gives the same run)."""
        common = {
            "environment": self.environment,
            "image": self.release,
            "config_dir": self.config_dir,
            "health_check_timeout": self.health_check_timeout,
            "keep_old": self.keep_old,
            "watch": self.watch,
        }
        if self.canary is None:
            return {**common, "traffic_switch_delay": self.traffic_switch_delay}
        return {
            **common,
            "ramp_stages": list(self.canary.stages),
            "duration": self.canary.duration,
            "interval": self.canary.interval,
            "auto_promote": self.auto_promote,
            "promote_now": self.promote_now,
            "approval_timeout": self.approval_timeout,
        }

    def ledger_options(self) -> dict[str, Any]:
        """The options the ledger records with the deployment."""
        if self.canary is None:
            return {
                "health_check_timeout": self.health_check_timeout,
                "traffic_switch_delay": self.traffic_switch_delay,
                "keep_old": self.keep_old,
                "watch": self.watch,
            }
        return {
            "stages": self.canary.stages,
            "duration": self.canary.duration,
            "interval": self.canary.interval,
            "judge": self.canary.judge.kind,
            "auto_promote": self.auto_promote,
            "promote_now": self.promote_now,
            "watch": self.watch,
        }


def blue_green_inputs(
    environment: str,
    image: str,
    config_dir: str | None = None,
    *,
    health_check_timeout: float | None = None,
    traffic_switch_delay: float = 0.0,
    keep_old: bool = False,
    watch: float | None = None,
) -> RunInputs:
    """A blue-green run's inputs: the ones handed over for exactly these parameters, else resolved now."""
    asked = {
        "environment": environment,
        "image": image,
        "config_dir": config_dir,
        "health_check_timeout": health_check_timeout,
        "keep_old": keep_old,
        "watch": watch,
        "traffic_switch_delay": traffic_switch_delay,
    }
    handed = _claim("blue-green", asked)
    if handed is not None:
        return handed

    def resolve(rt: Runtime) -> RunInputs:
        seconds = rt.watch_seconds(watch)
        provider = rt.metrics if seconds > 0 else None  # a bad [metrics] table is exit 2 before anything moves
        if provider is not None:
            check_live_series(rt, provider)  # the watch must be able to read the live release's series
        return RunInputs(
            rt=rt,
            release=image,  # validated where it came in: the --image option, the flow's Release parameter
            config_dir=config_dir,
            health_check_timeout=health_check_timeout,
            keep_old=keep_old,
            watch=seconds,
            provider=provider,
            traffic_switch_delay=traffic_switch_delay,
        )

    return _resolved(environment, config_dir, resolve)


def canary_inputs(
    environment: str,
    image: str,
    config_dir: str | None = None,
    *,
    ramp_stages: list[int] | None = None,
    duration: float | None = None,
    interval: float | None = None,
    auto_promote: bool = False,
    promote_now: bool = False,
    approval_timeout: float = 3600.0,
    health_check_timeout: float | None = None,
    keep_old: bool = False,
    watch: float | None = None,
) -> RunInputs:
    """A canary run's inputs: the ones handed over for exactly these parameters, else resolved now."""
    asked = {
        "environment": environment,
        "image": image,
        "config_dir": config_dir,
        "health_check_timeout": health_check_timeout,
        "keep_old": keep_old,
        "watch": watch,
        "ramp_stages": None if ramp_stages is None else list(ramp_stages),
        "duration": duration,
        "interval": interval,
        "auto_promote": auto_promote,
        "promote_now": promote_now,
        "approval_timeout": approval_timeout,
    }
    handed = _claim("canary", asked)
    if handed is not None:
        return handed

    def resolve(rt: Runtime) -> RunInputs:
        cfg = rt.environment.canary.override(ramp_stages, duration, interval)
        provider = rt.metrics  # built and validated: a query the metrics backend rejects is exit 2
        if rt.router.get_split() is None:
            raise ConfigError(
                f"nothing is live in {environment} to compare a canary with; "
                "deploy the first release with `turnout blue-green`"
            )
        check_live_series(rt, provider)  # metric names that do not match are exit 2, not "0 requests"
        return RunInputs(
            rt=rt,
            release=image,  # validated where it came in: the --image option, the flow's Release parameter
            config_dir=config_dir,
            health_check_timeout=health_check_timeout,
            keep_old=keep_old,
            watch=rt.watch_seconds(watch),
            provider=provider,
            canary=cfg,
            judge=rt.judge(),  # an unknown kind or bad settings: exit 2 before anything moves
            auto_promote=auto_promote,
            promote_now=promote_now,
            approval_timeout=approval_timeout,
        )

    return _resolved(environment, config_dir, resolve)


@dataclass(kw_only=True)
class RollbackInputs:
    """A rollback's inputs, checked once: the environment has deployed something, `rollback_to` was run here.

    `requested_at` (when the operator asked): a rollback that started after it already did this one's job.
    `if_live` (alert triggers): roll back only while that release still serves.
    """

    rt: Runtime
    rollback_to: str | None = None
    preserve_data: bool = False
    notify: bool = False
    reason: str = "manual rollback"
    config_dir: str | None = None
    if_live: str | None = None
    requested_at: datetime | None = None
    strategy: ClassVar[str] = "rollback"

    @property
    def environment(self) -> str:
        """The environment's name."""
        return self.rt.name

    def flow_parameters(self) -> dict[str, Any]:
        """The rollback flow's keyword arguments for this run."""
        return {
            "environment": self.environment,
            "rollback_to": self.rollback_to,
            "preserve_data": self.preserve_data,
            "notify": self.notify,
            "reason": self.reason,
            "config_dir": self.config_dir,
            "if_live": self.if_live,
            "requested_at": self.requested_at,
        }


def rollback_inputs(
    environment: str,
    rollback_to: str | None = None,
    preserve_data: bool = False,
    *,
    notify: bool = False,
    reason: str = "manual rollback",
    config_dir: str | None = None,
    if_live: str | None = None,
    requested_at: datetime | None = None,
) -> RollbackInputs:
    """A rollback's inputs: the ones handed over for exactly these parameters, else checked now.

    The refusals that need no lock (`precheck_rollback`) are exit 2 before anyone is asked to stop.
    The state directory is not checked: a rollback is how an operator gets out of trouble, full disk or not.
    """
    asked = {
        "environment": environment,
        "rollback_to": rollback_to,
        "preserve_data": preserve_data,
        "notify": notify,
        "reason": reason,
        "config_dir": config_dir,
        "if_live": if_live,
        "requested_at": requested_at,
    }
    handed = _claim("rollback", asked)
    if handed is not None:
        return handed
    rt = open_runtime(environment, config_dir)
    try:
        precheck_rollback(rt, rollback_to)
    except BaseException:
        rt.close()
        raise
    return RollbackInputs(
        rt=rt,
        rollback_to=rollback_to,
        preserve_data=preserve_data,
        notify=notify,
        reason=reason,
        config_dir=config_dir,
        if_live=if_live,
        requested_at=requested_at,
    )


def _resolved(environment: str, config_dir: str | None, resolve: Any) -> RunInputs:
    """Open the environment, check what every run checks, then `resolve(rt)`; close it again on a refusal."""
    rt = open_runtime(environment, config_dir)  # the whole file and its plugins, validated
    try:
        rt.check_storage()  # a read-only or full state directory
        if rt.environment.database is not None:
            open_database(rt.environment)  # no Alembic project, or a database that does not answer
        inputs: RunInputs = resolve(rt)
        return inputs
    except BaseException:
        rt.close()
        raise


def check_live_series(rt: Runtime, provider: Any) -> None:
    """Before anything moves: the live slot exposes every series the metrics provider reads (ConfigError)."""
    check = getattr(provider, "check_series", None)
    split = rt.router.get_split()
    if check is None or split is None or len(split.live_slots()) != 1:
        return
    live = split.live_slots()[0]
    if rt.target.status(live).running:
        check(live, rt.target.endpoints(live))


# --- the hand-over from the command line to the flow it runs in this process ----------------------

_handed: RunInputs | RollbackInputs | None = None
_handed_lock = threading.Lock()


@contextmanager
def handing_over(inputs: RunInputs | RollbackInputs) -> Iterator[None]:
    """While the caller runs the flow in this process, the flow takes `inputs` instead of resolving again.

    The runtime is closed afterwards whether or not a flow took it (Prefect may refuse the run first).
    """
    global _handed
    with _handed_lock:
        _handed = inputs
    try:
        yield
    finally:
        with _handed_lock:
            _handed = None
        inputs.rt.close()


def _claim(strategy: str, asked: dict[str, Any]) -> Any:
    """The handed-over inputs when they were resolved to exactly `asked` (the flow's parameters), once."""
    global _handed
    with _handed_lock:
        inputs = _handed
        if inputs is None or inputs.strategy != strategy or inputs.flow_parameters() != asked:
            return None
        _handed = None
        return inputs
