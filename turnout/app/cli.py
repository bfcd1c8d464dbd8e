"""The `turnout` command line. Exit codes: 0 promoted (or rolled back / recovered), 1 aborted or rolled
back by the watch (safe), 2 bad input (nothing touched), 3 not known to be safe (a human is needed).

Commands that only read (status, history, plugins, validate, logs, server) never import Prefect, so
they answer in well under a second; `recover` imports it only when there is something to recover.
Deploying commands validate everything first and exit 2 before anything is touched (no Prefect
server started either) when the input or the environment file is wrong.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import click

from turnout.errors import EXIT_BAD_INPUT, EXIT_UNSAFE, TurnoutError

__all__ = ["main", "cli"]


def _fail(err: TurnoutError) -> None:
    click.echo(f"turnout: error: {err}", err=True)
    sys.exit(err.exit_code)


def _prefect_env(verbose: bool) -> dict[str, Any]:
    """Quiet Prefect defaults, and the server this command's flows use: the configured PREFECT_API_URL
    (a team's server) as is, else the shared local server, started if needed (never an ephemeral one).

    Call it after validation (bad input starts nothing) and before Prefect is imported.
    """
    from turnout.app.prefect_server import use_prefect

    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    return use_prefect(echo=lambda line: click.echo(line, err=True))


class _Seconds(click.types.FloatParamType):
    """A float that is a real number: nan or ±inf would reach Prefect as a traceback, or wait forever."""

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        f = super().convert(value, param, ctx)
        if not math.isfinite(f):
            self.fail(f"must be a finite number of seconds, got {value!r}", param, ctx)
        return f


SECONDS = _Seconds()


def _positive(name: str):
    def check(ctx, param, value):
        if value is not None and value <= 0:
            raise click.BadParameter(f"must be greater than 0, got {value:g}")
        return value

    return check


def _non_negative(ctx, param, value):
    if value is not None and value < 0:
        raise click.BadParameter(f"must be 0 or more, got {value:g}")
    return value


def _release(ctx, param, value):
    from turnout.models import validate_release  # here: pydantic is not needed to start the CLI

    try:
        return validate_release(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _optional_release(ctx, param, value):
    return None if value is None else _release(ctx, param, value)


class _Group(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> Any:
        # click's usage errors exit 2 already; make sure ours do too and print one clear line.
        try:
            return super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(EXIT_BAD_INPUT)
        except click.Abort:
            click.echo("aborted by the operator", err=True)
            sys.exit(EXIT_UNSAFE)
        except TurnoutError as e:
            _fail(e)


@click.group(cls=_Group)
@click.version_option(package_name="turnout")
def cli() -> None:
    """turnout: move live traffic between releases, safely."""


_env_opt = click.option("--environment", "-e", required=True, help="Environment name: deployments/<ENV>.toml.")
_dir_opt = click.option(
    "--config-dir",
    default=None,
    envvar="TURNOUT_CONFIG_DIR",
    help="Directory of environment files (default ./deployments).",
)


@cli.command("blue-green")
@click.option("--image", required=True, callback=_release, help="Release to deploy, e.g. demo:v2.")
@_env_opt
@_dir_opt
@click.option(
    "--health-check-timeout",
    type=SECONDS,
    default=None,
    callback=_positive("health-check-timeout"),
    help="Seconds to wait for the new release to become healthy (default [health] timeout).",
)
@click.option(
    "--traffic-switch-delay",
    type=SECONDS,
    default=0.0,
    callback=_non_negative,
    help="Seconds to wait between a healthy release and the switch.",
)
@click.option("--keep-old", is_flag=True, help="Keep the old slot running after promotion.")
@click.option(
    "--watch",
    "watch",
    type=SECONDS,
    default=None,
    callback=_non_negative,
    help="Seconds to watch the release after promotion, old slot warm (default [rollback] watch; 0 skips).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan (slots, commands, router diff); change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def blue_green_cmd(
    *,
    image: str,
    environment: str,
    config_dir: str | None,
    health_check_timeout: float | None,
    traffic_switch_delay: float,
    keep_old: bool,
    watch: float | None,
    dry_run: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    """Start IMAGE in the idle slot, health-gate it, switch all traffic, verify; roll back on failure."""
    if dry_run:
        from turnout.plan import plan_blue_green
        from turnout.runtime import open_runtime

        rt = open_runtime(environment, config_dir)  # everything validated before anything is touched
        return _print_dry_run(plan_blue_green(rt, image).dry_run(), as_json)
    from turnout.flows._inputs import blue_green_inputs

    # resolved once, before Prefect starts: a bad input is exit 2 with no flow run; the flow takes these
    inputs = blue_green_inputs(
        environment,
        image,
        config_dir,
        health_check_timeout=health_check_timeout,
        traffic_switch_delay=traffic_switch_delay,
        keep_old=keep_old,
        watch=watch,
    )
    _run_inputs("turnout.flows.blue_green", inputs, as_json, verbose)


def _print_dry_run(outcome: dict[str, Any], as_json: bool) -> None:
    """A dry run's answer (`BlueGreenPlan.dry_run`, what the flow's dry run returns too): the plan, or its JSON."""
    if as_json:
        click.echo(json.dumps(outcome, default=str))
        return
    click.echo(outcome["text"])
    click.echo("dry run: nothing was changed")


def _run_inputs(module: str, inputs: Any, as_json: bool, verbose: bool) -> None:
    """Run a deploying flow with the inputs resolved here (`turnout.flows._inputs`), handed over, not resolved again."""
    from turnout.flows._inputs import handing_over

    with handing_over(inputs):
        inputs.rt.ledger.ensure_unlocked(inputs.environment)  # fail fast, before Prefect starts; the flow locks
        _run_flow(module, inputs.flow_parameters(), as_json, verbose)


def _run_flow(module: str, params: dict[str, Any], as_json: bool, verbose: bool) -> None:
    """Run a flow module's `run()` in this process, printing progress; exit with the outcome's code."""
    server = _prefect_env(verbose)
    import importlib

    from sqlalchemy.exc import DBAPIError

    from turnout.app.console import ConsoleReporter
    from turnout.registry import get_registry

    get_registry().pm.register(ConsoleReporter())
    run = importlib.import_module(module).run
    try:
        with _flow_context(server):
            outcome = run(**params)
    except (OSError, DBAPIError) as e:  # a disk filling, a state dir turning read-only, the ledger's database lost
        raise _midrun_failure(e, params["environment"], params.get("config_dir")) from None
    _print_outcome(outcome, as_json)


@contextmanager
def _flow_context(server: dict[str, Any], print_url: bool = True) -> Iterator[None]:
    """Around a command's flow runs: one Prefect client for all of them (each sync task builds its own
    otherwise: an SSL context and a connection, 30-200 ms each); on the shared server, the runs
    tagged with this command so its supervisor can mark them Crashed if the command is killed; the
    run's page in the UI printed."""
    from prefect import tags
    from prefect.context import SyncClientContext

    from turnout.app.prefect_server import run_tag

    with (
        _printing_run_url() if print_url else nullcontext(),
        SyncClientContext.get_or_create(),
        tags(run_tag()) if server["shared"] else nullcontext(),
    ):
        yield


@contextmanager
def _printing_run_url() -> Iterator[None]:
    """Print the flow run's page in the Prefect UI as soon as Prefect knows it (its "View at" line)."""
    import logging

    class Handler(logging.Handler):
        printed = False

        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if not self.printed and msg.startswith("View at "):
                self.printed = True
                click.echo(f"turnout: this run in the Prefect UI: {msg[len('View at ') :]}", err=True)

    logger, handler = logging.getLogger("prefect.flow_runs"), Handler(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _print_outcome(outcome: dict[str, Any], as_json: bool) -> None:
    """Print a run's outcome (one line, or JSON) and exit with its code."""
    if as_json:
        click.echo(json.dumps(outcome))
    else:
        click.echo(
            f"{outcome['outcome'].upper()}: "
            + (f"{outcome['release']} in " if outcome.get("release") else "")
            + outcome["environment"]
            + (f" (slot {outcome['slot']})" if outcome.get("slot") else "")
            + (f": {outcome['reason']}" if outcome.get("reason") else "")
        )
        if outcome.get("report"):
            click.echo(f"report: {outcome['report']}")
    sys.exit(outcome["exit_code"])


def _midrun_failure(err: BaseException, environment: str, config_dir: str | None) -> TurnoutError:
    """A storage or database fault that stopped a run part-way, as one line (exit 3) saying what to run next."""
    from turnout.config import load_environment
    from turnout.storage import midrun_failure

    try:
        state_dir = load_environment(environment, config_dir).state_dir
    except TurnoutError:
        state_dir = None
    return midrun_failure(err, environment, state_dir)


def _stages(ctx, param, value):
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter(
            f"{value!r}: the stages must not be empty; give comma-separated percentages, e.g. 10,25,50,100"
        )
    parts = value.split(",")
    if any(not x.strip() for x in parts):
        raise click.BadParameter(f"{value!r} has an empty element: give comma-separated percentages, e.g. 10,25,50,100")
    try:
        return [int(x) for x in parts]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of percentages, e.g. 10,25,50,100") from None


@cli.command("canary")
@click.option(
    "--image",
    default=None,
    callback=_optional_release,
    help="Release to ramp up, e.g. demo:v2 (omit with --promote to promote a running canary).",
)
@_env_opt
@_dir_opt
@click.option(
    "--ramp-stages",
    default=None,
    callback=_stages,
    help="Percentages, increasing, ending in 100 (default [canary] stages).",
)
@click.option(
    "--duration",
    type=SECONDS,
    default=None,
    callback=_positive("duration"),
    help="Seconds per stage (default [canary] duration).",
)
@click.option(
    "--interval",
    type=SECONDS,
    default=None,
    callback=_positive("interval"),
    help="Seconds per measurement (default [canary] interval).",
)
@click.option("--auto-promote", is_flag=True, help="Move on after every passing stage without waiting.")
@click.option(
    "--promote",
    is_flag=True,
    help="With --image: go to 100 after the first analysis passes. Without: promote the canary running in ENV.",
)
@click.option(
    "--approval-timeout",
    type=SECONDS,
    default=3600.0,
    callback=_positive("approval-timeout"),
    help="Seconds to wait for --promote after the first stage before aborting.",
)
@click.option(
    "--health-check-timeout",
    type=SECONDS,
    default=None,
    callback=_positive("health-check-timeout"),
    help="Seconds to wait for the new release to become healthy.",
)
@click.option("--keep-old", is_flag=True, help="Keep the old slot running after promotion.")
@click.option(
    "--watch",
    "watch",
    type=SECONDS,
    default=None,
    callback=_non_negative,
    help="Seconds to watch the release after promotion, old slot warm (default [rollback] watch; 0 skips).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def canary_cmd(
    *,
    image,
    environment,
    config_dir,
    ramp_stages,
    duration,
    interval,
    auto_promote,
    promote,
    approval_timeout,
    health_check_timeout,
    keep_old,
    watch,
    as_json,
    verbose,
) -> None:
    """Ramp IMAGE through the stages, judging canary against stable on live metrics; abort on a bad verdict."""
    if image is None:
        from turnout.errors import ConfigError
        from turnout.runtime import open_runtime

        if not promote:
            raise click.UsageError("give --image to start a canary, or --promote to promote the running one")
        rt = open_runtime(environment, config_dir)
        rt.check_storage()
        dep = rt.ledger.request_promotion(environment)
        rt.close()
        if dep is None:
            raise ConfigError(f"no canary is in progress in {environment}: nothing to promote")
        click.echo(f"promotion requested for canary deployment #{dep} in {environment}")
        return
    from turnout.flows._inputs import canary_inputs

    # resolved once, before Prefect starts: a bad input is exit 2 with no flow run; the flow takes these
    inputs = canary_inputs(
        environment,
        image,
        config_dir,
        ramp_stages=ramp_stages,
        duration=duration,
        interval=interval,
        auto_promote=auto_promote,
        promote_now=promote,
        approval_timeout=approval_timeout,
        health_check_timeout=health_check_timeout,
        keep_old=keep_old,
        watch=watch,
    )
    _run_inputs("turnout.flows.canary", inputs, as_json, verbose)


@cli.command()
@_env_opt
@_dir_opt
@click.option(
    "--rollback-to",
    default=None,
    callback=_optional_release,
    help="Roll back to this release (default: the warm slot, else the last known good).",
)
@click.option("--preserve-data", is_flag=True, help="Never restore the database, whatever the migrations say.")
@click.option("--notify", is_flag=True, help="Send the outcome to every notifier as urgent.")
@click.option("--reason", default="manual rollback", help="Why (goes to the ledger, the report and the notifiers).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def rollback(*, environment, config_dir, rollback_to, preserve_data, notify, reason, dry_run, as_json, verbose) -> None:
    """Put all traffic back on a release this environment has seen healthy (0 rolled back, 3 needs a human)."""
    from turnout.models import utcnow

    requested_at = utcnow()  # two rollbacks at once: the one that starts second sees the first did the job
    if len(reason) > 500:
        raise click.BadParameter("at most 500 characters", param_hint="--reason")
    if dry_run:
        from turnout.rollback import plan_rollback
        from turnout.runtime import open_runtime

        rt = open_runtime(environment, config_dir)
        return _print_dry_run(plan_rollback(rt, rollback_to, preserve_data).dry_run(), as_json)
    from turnout.flows._inputs import handing_over, rollback_inputs

    # checked once, before Prefect starts (exit 2, no flow run); the flow takes these
    inputs = rollback_inputs(
        environment,
        rollback_to,
        preserve_data,
        notify=notify,
        reason=reason,
        config_dir=config_dir,
        requested_at=requested_at,
    )
    with handing_over(inputs):
        inputs.rt.check_storage()
        _run_flow("turnout.flows.rollback", inputs.flow_parameters(), as_json, verbose)


@cli.command()
@_env_opt
@_dir_opt
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def recover(environment, config_dir, as_json, verbose) -> None:
    """After a crash: compare the ledger with the router and the slots, bring ENV to a safe, recorded state."""
    from turnout.recovery import decide, observe
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir)  # a bad file is exit 2 before anything
    rt.check_storage()
    # Observe and decide in plain Python, under the lock (refused at once, naming the holder, while a run
    # holds it): with nothing to recover there is no flow run (and no Prefect); the flow observes again
    # under its own lock when there is something to do.
    rt.ledger.acquire_lock(environment, purpose="recover")
    try:
        decision = decide(observe(rt, lock_pid=os.getpid()))
    finally:
        rt.ledger.release_lock(environment)
        rt.close()
    if not decision.changes:
        _print_outcome(
            {
                "outcome": "consistent" if decision.safe else "failed",
                "reason": decision.summary,
                "deployment_id": None,
                "environment": environment,
                "exit_code": 0 if decision.safe else EXIT_UNSAFE,
            },
            as_json,
        )
    _run_flow("turnout.flows.recover", dict(environment=environment, config_dir=config_dir), as_json, verbose)


@cli.command()
@_env_opt
@_dir_opt
@click.option(
    "--backup-before/--no-backup-before",
    default=None,
    help="Back up (and prove the backup) before migrating (default [database] backup_before; on in production).",
)
@click.option(
    "--dry-run", is_flag=True, help="Apply to a scratch copy restored from a proved backup; report; touch nothing live."
)
@click.option(
    "--verify", is_flag=True, help="After migrating: head reached, live slot ready, untouched tables unchanged."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def migrate(*, environment, config_dir, backup_before, dry_run, verify, as_json, verbose) -> None:
    """Migrate ENV's database to its Alembic head: lint, proved backup, online apply, put back on failure."""
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir)
    rt.check_storage()
    from turnout.database.connect import open_database

    open_database(
        rt.environment
    )  # exit 2 before Prefect starts: no [database], no Alembic project, a URL that does not connect
    rt.ledger.ensure_unlocked(environment)
    rt.close()
    _run_flow(
        "turnout.flows.migrate",
        dict(
            environment=environment,
            config_dir=config_dir,
            backup_before=backup_before,
            dry_run_only=dry_run,
            verify=verify,
        ),
        as_json,
        verbose,
    )


@cli.command("alert-receiver")
@click.option(
    "--listen",
    default="127.0.0.1:9099",
    show_default=True,
    help="HOST:PORT to listen on ([::1]:PORT for IPv6). Beyond loopback a token is required.",
)
@click.option(
    "--prefect-api-url",
    envvar="PREFECT_API_URL",
    default=None,
    help="Prefect API to post events to (default $PREFECT_API_URL).",
)
@_dir_opt
@click.option(
    "--environment-label",
    default="environment",
    show_default=True,
    help="The alert label that names the turnout environment.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File holding the bearer token Alertmanager must send (or set $TURNOUT_ALERT_TOKEN). "
    "Required unless --listen is a loopback address.",
)
def alert_receiver(
    listen: str, prefect_api_url: str | None, config_dir: str | None, environment_label: str, token_file: str | None
) -> None:
    """Alertmanager webhook receiver: each firing alert becomes a Prefect event that can trigger a rollback."""
    import logging

    from turnout.alert_receiver import AlertReceiver, known_environments, load_token
    from turnout.alert_server import AlertServer, Limits
    from turnout.config import config_dir as resolve_config_dir
    from turnout.errors import ConfigError

    host, _, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    if not prefect_api_url or not prefect_api_url.startswith(("http://", "https://")):
        raise click.UsageError("give --prefect-api-url (or set PREFECT_API_URL), e.g. http://127.0.0.1:4200/api")
    try:
        token = load_token(token_file, os.environ, listen_host=host)
    except ConfigError as e:
        _fail(e)
    cdir = resolve_config_dir(config_dir)
    envs = known_environments(cdir)
    if not envs:
        raise click.UsageError(f"no environment files in {cdir}: every alert would be dropped")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    limits = Limits()
    receiver = AlertReceiver(prefect_api_url, envs, environment_label=environment_label, token=token)
    try:
        server = AlertServer(receiver, (host, int(port)), limits)
    except OSError as e:
        receiver.close()
        raise click.UsageError(f"cannot listen on {listen}: {e.strerror or e}") from None
    click.echo(
        f"turnout alert-receiver on http://{listen}/alertmanager -> {prefect_api_url}/events "
        f"(environments: {', '.join(sorted(envs))}; bearer token {'required' if token else 'not set'}; "
        f"bodies up to {limits.max_body} bytes, read timeout {limits.read_timeout:g} s, "
        f"at most {limits.max_connections} connections)",
        err=True,
    )
    try:
        server.serve()
    except KeyboardInterrupt:
        pass


@cli.command()
@_env_opt
@_dir_opt
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(environment: str, config_dir: str | None, as_json: bool) -> None:
    """What runs where, the split the router really serves, the last known good release (writes nothing)."""
    from turnout.escape import one_line
    from turnout.procs import pid_alive
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir, check=False)
    ledger = rt.existing_ledger()  # a read creates no state directory and no ledger
    if ledger is None:
        if as_json:
            click.echo(json.dumps({"environment": environment, "known": False}))
        else:
            click.echo(
                f"environment {environment}: nothing deployed yet (no ledger at {rt.environment.effective_ledger_url})"
            )
        return
    st = ledger.environment_state(environment)
    router = rt.router_state()  # asked of the router itself, not read from turnout's file
    router_split = router.split if router.serving and router.known else None
    targets = {s: rt.target.status(s) for s in ("blue", "green")}
    if as_json:
        click.echo(
            json.dumps(
                {
                    **{k: v for k, v in st.items() if k not in ("split", "slots")},
                    "split": st["split"].as_dict() if st["split"] else None,
                    "router_split": router_split.as_dict() if router_split else None,
                    "router": router.model_dump(mode="json"),
                    "slots": {s: {**st["slots"].get(s, {}), "process": targets[s].model_dump()} for s in targets},
                },
                default=str,
            )
        )
        return
    click.echo(f"environment {environment}")
    click.echo(
        f"  traffic        : {router.describe()}"
        + (
            ""
            if st["split"] == router_split or not router.routed
            else f"   (ledger says {st['split']}: run `turnout recover --environment {environment}`)"
        )
    )
    for s in ("blue", "green"):
        row, t = st["slots"].get(s, {}), targets[s]
        weight = router_split.weight(s) if router_split else 0
        click.echo(
            f"  {s:<6} {weight:>3}%   : {row.get('release') or '-':<16} ledger={row.get('state', 'empty'):<9} "
            f"process={t.state}"
            + (f" pid={t.pid}" if t.pid and t.running else "")
            + (f"  ({t.detail})" if t.detail else "")
        )
    click.echo(f"  last known good: {st['last_known_good'] or '-'}")
    if st["last_deployment"]:
        d = st["last_deployment"]
        click.echo(
            f"  last deployment: #{d['id']} {d['strategy']} {d['release']} -> {d['status']}"
            + (f" ({one_line(d['reason'])})" if d["reason"] else "")
        )
    lock = st["lock"]
    if lock:
        import socket

        gone = lock["host"] == socket.gethostname() and not pid_alive(lock["pid"])
        click.echo(
            f"  in progress    : pid {lock['pid']} on {lock['host']} since {lock['acquired_at']}"
            + (f" -- that process is gone: a crashed run; run `turnout recover -e {environment}`" if gone else "")
        )


@cli.command()
@_env_opt
@_dir_opt
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, help="How many deployments.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def history(environment: str, config_dir: str | None, limit: int, as_json: bool) -> None:
    """The latest deployments of an environment, newest first."""
    from turnout.escape import one_line
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir, check=False)
    ledger = rt.existing_ledger()  # a read creates nothing
    rows = ledger.history(environment, limit) if ledger else []
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    if not rows:
        click.echo(f"no deployments in {environment} yet")
    for d in rows:
        took = f"{(d['finished_at'] - d['started_at']).total_seconds():6.1f}s" if d["finished_at"] else "   ...  "
        click.echo(
            f"#{d['id']:<4} {d['started_at']:%Y-%m-%d %H:%M:%S} {d['strategy']:<10} {d['release']:<16} "
            f"{d['from_slot'] or '-':>5} -> {d['to_slot'] or '-':<5} {took} {d['status']:<9} {one_line(d['reason'])}"
        )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins(as_json: bool) -> None:
    """Every loaded plugin: kind, name, and the package it came from."""
    from turnout.registry import get_registry

    rows = get_registry().describe()
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows]))
        return
    for r in rows:
        click.echo(f"{r.kind:<9} {r.name:<14} {r.source}  {r.description}")


@cli.command()
@_env_opt
@_dir_opt
def validate(environment: str, config_dir: str | None) -> None:
    """Validate an environment file and its plugins' settings; change nothing."""
    from turnout.runtime import validate_environment

    env = validate_environment(environment, config_dir)
    click.echo(
        f"{environment}: ok (router {env.router.kind}, target {env.target.kind}, "
        f"{len(env.gates)} gate(s), {len(env.notifiers)} notifier(s))"
    )


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the demo environment running at the end.")
@click.option(
    "--requests",
    "load_requests",
    type=click.IntRange(10, 100000),
    default=20000,
    help="Upper bound of requests the background load sends.",
)
def demo(keep: bool, load_requests: int) -> None:
    """Run the nine acts of a real deployment on this machine (NGINX, two slots, a SQLite ledger):

    \b
    1. first deployment: demo:v1
    2. blue-green to demo:v2 under load: 0 errors
    3. demo:v4 never becomes ready: refused before any traffic moves
    4. canary demo:v5: 10% -> 50% -> 100%, judged on live metrics, promoted
    5. canary demo:v3 (5xx): caught at the first stage, with the evidence
    6. demo:v8 turns bad after promotion: the watch rolls it back
    7. turnout rollback by hand, to the last known good release
    8. database migrations: lint, proved backup, dry run, apply, verify
    9. the ledger: every deployment above, as `turnout history` shows it
    """
    server = _prefect_env(False)
    from turnout.app.demo import run_demo

    with _flow_context(server, print_url=False):  # the demo prints the UI itself
        code = run_demo(keep=keep, max_requests=load_requests, ui_url=server["ui_url"])
    sys.exit(code)


@cli.command("demo-stop")
def demo_stop() -> None:
    """Stop a demo left running by `turnout demo --keep`."""
    from turnout.app.demo import stop_demo

    stop_demo()
    click.echo("demo stopped")


@cli.command()
@_env_opt
@_dir_opt
@click.option("--slot", type=click.Choice(["blue", "green"]), default=None, help="One slot (default: both).")
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(1, 100000),
    default=100,
    show_default=True,
    help="How many lines from the end of each log.",
)
def logs(environment: str, config_dir: str | None, slot: str | None, lines: int) -> None:
    """The last lines of a slot's output, as its deploy target keeps it (no Prefect)."""
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir, check=False)
    for s in [slot] if slot else ["blue", "green"]:
        text = rt.target.logs(s, lines)
        if not slot:
            click.echo(f"--- slot {s} ---")
        click.echo(text.rstrip("\n") if text else f"(no output from slot {s})")


@cli.group()
def server() -> None:
    """The shared local Prefect server (used when PREFECT_API_URL is not set) and its UI."""


def _server_lines(st: dict[str, Any]) -> list[str]:
    idle = f"after {st['idle']:g} s unused" if st["idle"] else "never (runs until `turnout server stop`)"
    lines = []
    if st["running"]:
        lines += [
            f"shared Prefect server: {'running' if st['answering'] else st['status'] + ', not answering'}",
            f"  UI        : {st['url']}   (open it to watch runs, artifacts and the canary approval form)",
            f"  API       : {st['api_url']}",
            f"  pid       : {st['pid']} (supervisor {st['supervisor_pid']}"
            + (f", warm runner {st['warm_pid']}" if st["warm_pid"] else "")
            + f"), port {st['port']}, "
            f"since {st['started_at']}",
            f"  idle stop : {idle}"
            + (f"; unused for {st['idle_for']:.0f} s" if st["idle_for"] is not None else "")
            + (f"; in use by pid {', '.join(map(str, st['users']))}" if st["users"] else ""),
        ]
    else:
        lines += [
            "shared Prefect server: not running (the next command that runs a flow starts it; "
            "`turnout server start` starts it now)",
            f"  idle stop : {idle}",
        ]
    lines += [f"  home      : {st['home']} (PREFECT_HOME {st['prefect_home']})", f"  log       : {st['log']}"]
    if st["configured_api_url"]:
        lines.append(f"PREFECT_API_URL is set: commands use {st['configured_api_url']}, not this server")
    return lines


@server.command("start")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port on 127.0.0.1 (default $TURNOUT_SERVER_PORT, else the last one if free, else a free one).",
)
@click.option(
    "--idle",
    type=click.FloatRange(0),
    default=None,
    help="Stop after this many idle seconds; 0 = until `turnout server stop` (default $TURNOUT_SERVER_IDLE or 3600).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def server_start(port: int | None, idle: float | None, as_json: bool) -> None:
    """Start the shared Prefect server now (or report the running one)."""
    from turnout.app.prefect_server import ensure_server, server_status

    ensure_server(port=port, idle=idle, echo=None if as_json else (lambda line: click.echo(line, err=True)))
    st = server_status()
    click.echo(json.dumps(st) if as_json else "\n".join(_server_lines(st)))


@server.command("stop")
@click.option("--force", is_flag=True, help="Stop it even while a turnout command is using it.")
def server_stop(force: bool) -> None:
    """Stop the shared Prefect server this turnout home started (matched by pid and start time)."""
    from turnout.app.prefect_server import stop_server

    out = stop_server(force=force)
    click.echo(
        f"stopped the shared Prefect server ({', '.join(out['stopped'])})"
        if out["stopped"]
        else "no shared Prefect server was running" + (" (a stale state file was removed)" if out["state"] else "")
    )


@server.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def server_status_cmd(as_json: bool) -> None:
    """The shared server's UI URL, pid, port, home and idle setting (starts nothing)."""
    from turnout.app.prefect_server import server_status

    st = server_status()
    click.echo(json.dumps(st) if as_json else "\n".join(_server_lines(st)))


def main() -> None:
    """Console-script entry point: the warm runner runs the command when it can (see turnout.app.warm), else here."""
    from turnout.app.warm import try_warm

    try_warm(sys.argv)  # returns only when the command must run in this process
    cli()


if __name__ == "__main__":
    main()
