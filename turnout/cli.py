"""The `turnout` command line. Exit codes: 0 promoted (or rolled back / recovered), 1 aborted or rolled
back by the watch (safe), 2 bad input (nothing touched), 3 not known to be safe (a human is needed).

Commands that only read (status, history, plugins, validate) never import Prefect, so they answer
in well under a second. Deploying commands validate everything first and exit 2 before anything
is touched when the input or the environment file is wrong.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Any

import click

from turnout.errors import EXIT_BAD_INPUT, EXIT_UNSAFE, TurnoutError
from turnout.models import validate_release

__all__ = ["main", "cli"]


def _fail(err: TurnoutError) -> None:
    click.echo(f"turnout: error: {err}", err=True)
    sys.exit(err.exit_code)


def _prefect_env(verbose: bool) -> None:
    """Quiet, offline-safe Prefect defaults unless the operator set their own."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


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
    try:
        return validate_release(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


class _Group(click.Group):
    def main(self, *args: Any, **kwargs: Any) -> Any:
        # click's usage errors exit 2 already; make sure ours do too and print one clear line.
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
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
_dir_opt = click.option("--config-dir", default=None, envvar="TURNOUT_CONFIG_DIR",
                        help="Directory of environment files (default ./deployments).")


@cli.command("blue-green")
@click.option("--image", required=True, callback=_release, help="Release to deploy, e.g. demo:v2.")
@_env_opt
@_dir_opt
@click.option("--health-check-timeout", type=float, default=None, callback=_positive("health-check-timeout"),
              help="Seconds to wait for the new release to become healthy (default [health] timeout).")
@click.option("--traffic-switch-delay", type=float, default=0.0, callback=_non_negative,
              help="Seconds to wait between a healthy release and the switch.")
@click.option("--keep-old", is_flag=True, help="Keep the old slot running after promotion.")
@click.option("--watch", "watch", type=float, default=None, callback=_non_negative,
              help="Seconds to watch the release after promotion, old slot warm (default [rollback] watch; 0 skips).")
@click.option("--dry-run", is_flag=True, help="Print the plan (slots, commands, router diff); change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def blue_green_cmd(image: str, environment: str, config_dir: str | None, health_check_timeout: float | None,
                   traffic_switch_delay: float, keep_old: bool, watch: float | None, dry_run: bool, as_json: bool,
                   verbose: bool) -> None:
    """Start IMAGE in the idle slot, health-gate it, switch all traffic, verify; roll back on failure."""
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir)  # everything validated before anything is touched
    if dry_run:
        from turnout.plan import plan_blue_green

        click.echo(plan_blue_green(rt, image).render())
        click.echo("dry run: nothing was changed")
        return
    if (rt.environment.rollback.watch if watch is None else watch) > 0:
        rt.metrics_provider()  # the watch's metrics source: a query the backend rejects is exit 2 now
    rt.ledger.ensure_unlocked(environment)  # fail fast, before Prefect starts; the flow locks for real
    rt.close()
    _run_flow("flows.blue_green", dict(environment=environment, image=image, config_dir=config_dir,
                                       health_check_timeout=health_check_timeout,
                                       traffic_switch_delay=traffic_switch_delay, keep_old=keep_old, watch=watch),
              as_json, verbose)


def _run_flow(module: str, params: dict[str, Any], as_json: bool, verbose: bool) -> None:
    """Run a flow module's `run()` in this process, printing progress; exit with the outcome's code."""
    _prefect_env(verbose)
    import importlib

    from turnout.console import ConsoleReporter
    from turnout.plugins import get_registry

    get_registry().pm.register(ConsoleReporter())
    click.echo("turnout: starting the Prefect flow"
               + ("" if os.environ.get("PREFECT_API_URL") else " (ephemeral Prefect server; set PREFECT_API_URL to use yours)"),
               err=True)
    outcome = importlib.import_module(module).run(**params)
    if as_json:
        click.echo(json.dumps(outcome))
    else:
        click.echo(f"{outcome['outcome'].upper()}: " + (f"{outcome['release']} in " if outcome.get("release") else "")
                   + outcome["environment"]
                   + (f" (slot {outcome['slot']})" if outcome.get("slot") else "")
                   + (f": {outcome['reason']}" if outcome.get("reason") else ""))
        if outcome.get("report"):
            click.echo(f"report: {outcome['report']}")
    sys.exit(outcome["exit_code"])


def _stages(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()] if value.strip() else []
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of percentages, e.g. 10,25,50,100") from None


@cli.command("canary")
@click.option("--image", default=None, help="Release to ramp up, e.g. demo:v2 (omit with --promote to promote a running canary).")
@_env_opt
@_dir_opt
@click.option("--ramp-stages", default=None, callback=_stages, help="Percentages, increasing, ending in 100 (default [canary] stages).")
@click.option("--duration", type=float, default=None, callback=_positive("duration"), help="Seconds per stage (default [canary] duration).")
@click.option("--interval", type=float, default=None, callback=_positive("interval"), help="Seconds per measurement (default [canary] interval).")
@click.option("--auto-promote", is_flag=True, help="Move on after every passing stage without waiting.")
@click.option("--promote", is_flag=True, help="With --image: go to 100 after the first analysis passes. "
                                                "Without: promote the canary running in ENV.")
@click.option("--approval-timeout", type=float, default=3600.0, callback=_positive("approval-timeout"),
              help="Seconds to wait for --promote after the first stage before aborting.")
@click.option("--health-check-timeout", type=float, default=None, callback=_positive("health-check-timeout"),
              help="Seconds to wait for the new release to become healthy.")
@click.option("--keep-old", is_flag=True, help="Keep the old slot running after promotion.")
@click.option("--watch", "watch", type=float, default=None, callback=_non_negative,
              help="Seconds to watch the release after promotion, old slot warm (default [rollback] watch; 0 skips).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def canary_cmd(image, environment, config_dir, ramp_stages, duration, interval, auto_promote, promote,
               approval_timeout, health_check_timeout, keep_old, watch, as_json, verbose) -> None:
    """Ramp IMAGE through the stages, judging canary against stable on live metrics; abort on a bad verdict."""
    from turnout.errors import ConfigError
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir)
    if image is None:
        if not promote:
            raise click.UsageError("give --image to start a canary, or --promote to promote the running one")
        dep = rt.ledger.request_promotion(environment)
        if dep is None:
            raise ConfigError(f"no canary is in progress in {environment}: nothing to promote")
        click.echo(f"promotion requested for canary deployment #{dep} in {environment}")
        return
    image = _release(None, None, image)
    rt.environment.canary.override(ramp_stages, duration, interval)  # exit 2 before anything moves
    rt.metrics_provider()  # a query the metrics backend rejects is exit 2 too
    if rt.router.get_split() is None:
        raise ConfigError(f"nothing is live in {environment} to compare a canary with; "
                          "deploy the first release with `turnout blue-green`")
    rt.ledger.ensure_unlocked(environment)
    rt.close()
    _run_flow("flows.canary", dict(environment=environment, image=image, config_dir=config_dir, ramp_stages=ramp_stages,
                                   duration=duration, interval=interval, auto_promote=auto_promote, promote_now=promote,
                                   approval_timeout=approval_timeout, health_check_timeout=health_check_timeout,
                                   keep_old=keep_old, watch=watch), as_json, verbose)


def _optional_release(ctx, param, value):
    return None if value is None else _release(ctx, param, value)


@cli.command()
@_env_opt
@_dir_opt
@click.option("--rollback-to", default=None, callback=_optional_release,
              help="Roll back to this release (default: the warm slot, else the last known good).")
@click.option("--preserve-data", is_flag=True, help="Never restore the database, whatever the migrations say.")
@click.option("--notify", is_flag=True, help="Send the outcome to every notifier as urgent.")
@click.option("--reason", default="manual rollback", help="Why (goes to the ledger, the report and the notifiers).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def rollback(environment, config_dir, rollback_to, preserve_data, notify, reason, dry_run, as_json, verbose) -> None:
    """Put all traffic back on a release this environment has seen healthy (0 rolled back, 3 needs a human)."""
    from turnout.models import utcnow
    from turnout.rollback import plan_rollback, precheck_rollback
    from turnout.runtime import open_runtime

    requested_at = utcnow()  # two rollbacks at once: the one that starts second sees the first did the job
    if len(reason) > 500:
        raise click.BadParameter("at most 500 characters", param_hint="--reason")
    rt = open_runtime(environment, config_dir)
    if dry_run:
        click.echo(plan_rollback(rt, rollback_to, preserve_data).render())
        click.echo("dry run: nothing was changed")
        return
    precheck_rollback(rt, rollback_to)  # exit 2 before Prefect starts
    rt.close()
    _run_flow("flows.rollback", dict(environment=environment, config_dir=config_dir, rollback_to=rollback_to,
                                     preserve_data=preserve_data, notify=notify, reason=reason,
                                     requested_at=requested_at), as_json, verbose)


@cli.command()
@_env_opt
@_dir_opt
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def recover(environment, config_dir, as_json, verbose) -> None:
    """After a crash: compare the ledger with the router and the slots, bring ENV to a safe, recorded state."""
    from turnout.runtime import open_runtime

    open_runtime(environment, config_dir).close()  # a bad file is exit 2 before anything
    _run_flow("flows.recover", dict(environment=environment, config_dir=config_dir), as_json, verbose)


@cli.command()
@_env_opt
@_dir_opt
@click.option("--backup-before/--no-backup-before", default=None,
              help="Back up (and prove the backup) before migrating (default [database] backup_before; on in production).")
@click.option("--dry-run", is_flag=True, help="Apply to a scratch copy restored from a proved backup; report; touch nothing live.")
@click.option("--verify", is_flag=True, help="After migrating: head reached, live slot ready, untouched tables unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--verbose", "-v", is_flag=True, help="Show Prefect's own log lines too.")
def migrate(environment, config_dir, backup_before, dry_run, verify, as_json, verbose) -> None:
    """Migrate ENV's database to its Alembic head: lint, proved backup, online apply, put back on failure."""
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir)
    from flows.migrate import open_database

    open_database(rt)  # exit 2 before Prefect starts: no [database], no Alembic project, a URL that does not connect
    rt.ledger.ensure_unlocked(environment)
    rt.close()
    _run_flow("flows.migrate", dict(environment=environment, config_dir=config_dir, backup_before=backup_before,
                                    dry_run_only=dry_run, verify=verify), as_json, verbose)


@cli.command("alert-receiver")
@click.option("--listen", default="127.0.0.1:9099", show_default=True, help="HOST:PORT to listen on.")
@click.option("--prefect-api-url", envvar="PREFECT_API_URL", default=None,
              help="Prefect API to post events to (default $PREFECT_API_URL).")
@_dir_opt
@click.option("--environment-label", default="environment", show_default=True,
              help="The alert label that names the turnout environment.")
def alert_receiver(listen: str, prefect_api_url: str | None, config_dir: str | None, environment_label: str) -> None:
    """Alertmanager webhook receiver: each firing alert becomes a Prefect event that can trigger a rollback."""
    import logging

    from turnout.alert_receiver import AlertReceiver, known_environments
    from turnout.config import config_dir as resolve_config_dir

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    if not prefect_api_url or not prefect_api_url.startswith(("http://", "https://")):
        raise click.UsageError("give --prefect-api-url (or set PREFECT_API_URL), e.g. http://127.0.0.1:4200/api")
    cdir = resolve_config_dir(config_dir)
    envs = known_environments(cdir)
    if not envs:
        raise click.UsageError(f"no environment files in {cdir}: every alert would be dropped")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        server = AlertReceiver((host, int(port)), prefect_api_url, envs, environment_label)
    except OSError as e:
        raise click.UsageError(f"cannot listen on {listen}: {e.strerror or e}") from None
    click.echo(f"turnout alert-receiver on http://{listen}/alertmanager -> {prefect_api_url}/events "
               f"(environments: {', '.join(sorted(envs))})", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command()
@_env_opt
@_dir_opt
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(environment: str, config_dir: str | None, as_json: bool) -> None:
    """What runs where, the traffic split, the last known good release (reads the ledger only)."""
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir, check=False)
    st = rt.ledger.environment_state(environment)
    router_split = rt.router.get_split()
    targets = {s: rt.target.status(s) for s in ("blue", "green")}
    if as_json:
        click.echo(json.dumps({
            **{k: v for k, v in st.items() if k not in ("split", "slots")},
            "split": st["split"].as_dict() if st["split"] else None,
            "router_split": router_split.as_dict() if router_split else None,
            "slots": {s: {**st["slots"].get(s, {}), "process": targets[s].model_dump()} for s in targets},
        }, default=str))
        return
    click.echo(f"environment {environment}")
    click.echo(f"  traffic        : {router_split or 'not routed yet'}"
               + ("" if st["split"] == router_split else f"   (ledger says {st['split']}: run `turnout status` again or recover)"))
    for s in ("blue", "green"):
        row, t = st["slots"].get(s, {}), targets[s]
        weight = router_split.weight(s) if router_split else 0
        click.echo(f"  {s:<6} {weight:>3}%   : {row.get('release') or '-':<16} ledger={row.get('state', 'empty'):<9} "
                   f"process={t.state}" + (f" pid={t.pid}" if t.pid and t.running else "")
                   + (f"  ({t.detail})" if t.detail else ""))
    click.echo(f"  last known good: {st['last_known_good'] or '-'}")
    if st["last_deployment"]:
        d = st["last_deployment"]
        click.echo(f"  last deployment: #{d['id']} {d['strategy']} {d['release']} -> {d['status']}"
                   + (f" ({d['reason']})" if d["reason"] else ""))
    if st["lock"]:
        click.echo(f"  in progress    : pid {st['lock']['pid']} on {st['lock']['host']} since {st['lock']['acquired_at']}")


@cli.command()
@_env_opt
@_dir_opt
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, help="How many deployments.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def history(environment: str, config_dir: str | None, limit: int, as_json: bool) -> None:
    """The latest deployments of an environment, newest first."""
    from turnout.runtime import open_runtime

    rt = open_runtime(environment, config_dir, check=False)
    rows = rt.ledger.history(environment, limit)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    if not rows:
        click.echo(f"no deployments in {environment} yet")
    for d in rows:
        took = f"{(d['finished_at'] - d['started_at']).total_seconds():6.1f}s" if d["finished_at"] else "   ...  "
        click.echo(f"#{d['id']:<4} {d['started_at']:%Y-%m-%d %H:%M:%S} {d['strategy']:<10} {d['release']:<16} "
                   f"{d['from_slot'] or '-':>5} -> {d['to_slot'] or '-':<5} {took} {d['status']:<9} {d['reason']}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins(as_json: bool) -> None:
    """Every loaded plugin: kind, name, and the package it came from."""
    from turnout.plugins import get_registry

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
    click.echo(f"{environment}: ok (router {env.router.kind}, target {env.target.kind}, "
               f"{len(env.gates)} gate(s), {len(env.notifiers)} notifier(s))")


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the demo environment running at the end.")
@click.option("--requests", "load_requests", type=click.IntRange(10, 100000), default=20000,
              help="Upper bound of requests the background load sends.")
def demo(keep: bool, load_requests: int) -> None:
    """Deploy v1, blue-green to v2 under load (0 errors), then show v4 refused before any traffic moves."""
    _prefect_env(False)
    from turnout.demo import run_demo

    sys.exit(run_demo(keep=keep, max_requests=load_requests))


@cli.command("demo-stop")
def demo_stop() -> None:
    """Stop a demo left running by `turnout demo --keep`."""
    from turnout.demo import stop_demo

    stop_demo()
    click.echo("demo stopped")


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
