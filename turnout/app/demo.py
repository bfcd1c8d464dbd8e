"""`turnout demo`: a zero-downtime blue-green deployment on this machine, with embedded defaults.

It writes a throw-away environment (`.turnout/demo/`, free 127.0.0.1 ports, managed NGINX, the
process target running `examples/demo_app`, a SQLite ledger), deploys v1, blue-greens to v2 while
a bounded load runs through NGINX (errors must be 0), then tries v4 (never ready) and shows it
refused before any traffic moved, then ramps v5 as a canary (promoted) and v3 (5xx: aborted at
the first stage, with the evidence), lets the watch roll back v8 (bad after promotion), rolls back
by hand, migrates the database (lint, proved backup, dry run, apply, verify) and prints the
ledger: nine acts, listed by `turnout demo --help`. The flows run against the shared local Prefect
server (`turnout.app.prefect_server`) unless PREFECT_API_URL is set; its UI shows every run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

import turnout
from turnout.addresses import free_port
from turnout.errors import ConfigError
from turnout.loadgen import Load, LoadResult

__all__ = ["run_demo", "demo_paths", "demo_environment", "stop_demo"]


def demo_paths() -> tuple[Path, Path, Path]:
    """(project root, demo state root, demo app dir) of this checkout."""
    root = Path(turnout.__file__).resolve().parent.parent
    app = root / "examples" / "demo_app"
    if not (app / "demo_app").is_dir():
        raise ConfigError(f"the demo service is not at {app}; run `make demo` from a clone of the repository")
    return root, root / ".turnout" / "demo", app


def demo_environment(
    name: str,
    state_dir: str | Path,
    listen: str,
    blue: str,
    green: str,
    *,
    app: Path | None = None,
    router_extra: str = "",
    health: str = "timeout = 30",
    extra: str = "",
    rollback: str = "watch = 0",
) -> str:
    """An environment file for the demo service: managed NGINX, the process target, two slots.

    Used by `turnout demo`, the benchmarks and the tests, so all three deploy the same way. `rollback`
    is the `[rollback]` table's body: no watch unless asked, so a deployment ends when it is promoted.
    """
    app = app or demo_paths()[2]
    return f'''name = "{name}"
state_dir = "{state_dir}"

[router]
kind = "nginx"
listen = "{listen}"
{router_extra}

[target]
kind = "process"
cwd = "{app}"
command = ["{{python}}", "-m", "demo_app", "--release", "{{image}}",
           "--host", "{{host}}", "--port", "{{port}}", "--slot", "{{slot}}"]
stop_grace = 5

[target.slots]
blue = "{blue}"
green = "{green}"

[health]
{health}

[rollback]
{rollback}
{extra}
'''


def _write_environment(state_root: Path, app: Path) -> Path:
    cdir = state_root / "deployments"
    cdir.mkdir(parents=True, exist_ok=True)
    listen, blue, green = (f"127.0.0.1:{free_port()}" for _ in range(3))
    canary = "\n[canary]\nstages = [10, 50, 100]\nduration = 4\ninterval = 2\nmin_requests = 20\n"
    (cdir / "demo.toml").write_text(
        f"# written by `turnout demo`; ports picked free at {time.strftime('%H:%M:%S')}\n"
        + demo_environment(
            "demo",
            state_root / "state",
            listen,
            blue,
            green,
            app=app,
            extra=canary,
            rollback="watch = 0\ninterval = 2\nmin_requests = 10",
        )
    )
    return cdir


def _clean(cdir: Path) -> None:
    """Stop whatever an earlier demo left running (only processes it recorded) and forget its state."""
    from turnout.runtime import open_runtime

    if (cdir / "demo.toml").is_file():
        try:
            rt = open_runtime("demo", cdir, check=False)
            for slot in ("blue", "green"):
                rt.target.stop(slot)
            rt.router.stop()
        except Exception as e:  # a broken leftover must not stop a fresh demo
            click.echo(f"  (could not clean the previous demo: {e})")
    shutil.rmtree(cdir.parent, ignore_errors=True)


def _say(title: str) -> None:
    click.echo("")
    click.secho(f"== {title}", bold=True)


def _show_load(res: LoadResult) -> None:
    d = res.as_dict()
    click.echo(f"   load: {d['requests']} requests in {d['seconds']}s ({d['rps']}/s) through NGINX")
    click.echo("         served by: " + ", ".join(f"{k} x{v}" for k, v in sorted(d["by_release"].items())))
    click.echo(
        f"         non-2xx: {d['non_2xx']}   connection errors: {d['connection_errors']}   "
        "(keep-alive connections closed by the reload and retried, as clients do: "
        f"{d['retried_after_keepalive_close']})"
    )


def _serving(url: str) -> str:
    import httpx

    return httpx.get(url, headers={"Connection": "close"}, timeout=5).headers.get("x-release", "?")


def run_demo(keep: bool = False, max_requests: int = 20000, ui_url: str | None = None) -> int:
    """Run the demo; return 0 when both outcomes were as expected and the load saw no errors.

    `ui_url`: the Prefect UI the runs go to (printed, so they can be watched there).
    """
    from turnout.flows import blue_green
    from turnout.runtime import open_runtime

    _root, state_root, app = demo_paths()
    cdir = state_root / "deployments"
    _clean(cdir)
    cdir = _write_environment(state_root, app)
    rt = open_runtime("demo", cdir)
    url = f"http://{rt.environment.router.settings()['listen']}/"
    click.echo(
        f"turnout demo: NGINX on {url}, slots blue={rt.target.endpoints('blue')[0]} "
        f"green={rt.target.endpoints('green')[0]}, state in {state_root}"
    )
    if ui_url:
        click.echo(f"Prefect UI (every run, its task runs, logs and report artifacts): {ui_url}")
    ok = True

    _say("1. first deployment: demo:v1")
    out = blue_green.run(environment="demo", image="demo:v1", config_dir=str(cdir))
    click.echo(f"   -> {out['outcome']} in slot {out['slot']}")
    ok &= out["outcome"] == "promoted"

    _say("2. blue-green to demo:v2 while a bounded load runs through NGINX")
    load = Load(url, connections=8, max_requests=max_requests, max_seconds=60).start()
    time.sleep(0.5)
    out = blue_green.run(environment="demo", image="demo:v2", config_dir=str(cdir))
    time.sleep(0.5)
    res = load.stop()
    click.echo(f"   -> {out['outcome']}: demo:v2 live in slot {out['slot']}")
    _show_load(res)
    ok &= out["outcome"] == "promoted" and res.non_2xx == 0 and res.connection_errors == 0

    _say("3. demo:v4 (never becomes ready) is refused before any traffic moves")
    before = rt.router.get_split()
    load = Load(url, connections=4, max_requests=max_requests, max_seconds=60).start()
    out = blue_green.run(environment="demo", image="demo:v4", config_dir=str(cdir), health_check_timeout=5)
    res = load.stop()
    after = rt.router.get_split()
    click.echo(f"   -> {out['outcome']}: {out['reason']}")
    click.echo(f"   traffic before: {before}   after: {after}   (unchanged: {before == after})")
    _show_load(res)
    ok &= out["outcome"] == "aborted" and before == after and res.non_2xx == 0 and res.connection_errors == 0

    from turnout.flows import canary

    _say("4. canary demo:v5 (healthy): 10% -> 50% -> 100%, judged on live metrics, under load")
    load = Load(url + "api/items", connections=8, max_requests=max_requests * 3, max_seconds=90).start()
    out = canary.run(environment="demo", image="demo:v5", config_dir=str(cdir), auto_promote=True)
    res = load.stop()
    click.echo(f"   -> {out['outcome']}: demo:v5 live in slot {out['slot']}")
    _show_load(res)
    ok &= out["outcome"] == "promoted" and res.non_2xx == 0 and res.connection_errors == 0

    _say("5. canary demo:v3 (5xx on 20% of API calls) is caught at the first stage")
    load = Load(url + "api/items", connections=8, max_requests=max_requests * 3, max_seconds=90).start()
    out = canary.run(environment="demo", image="demo:v3", config_dir=str(cdir), auto_promote=True)
    res = load.stop()
    click.echo(f"   -> {out['outcome']}: {out['reason']}")
    bad = [v for v in (rt.ledger.deployment(out["deployment_id"]) or {}).get("verdicts", []) if v["outcome"] == "fail"]
    if bad:
        ev = bad[0]["evidence"]
        click.echo(
            f"   evidence: canary {ev['canary']['requests']:.0f} requests, 5xx {ev['canary']['error_rate']:.1%}; "
            f"stable {ev['stable']['requests']:.0f} requests, 5xx {ev['stable']['error_rate']:.1%}"
        )
    click.echo(
        f"   traffic now: {rt.router.get_split()}; the load saw {res.non_2xx} 5xx from the canary "
        f"while it held 10% ({res.by_status})"
    )
    split = rt.router.get_split()
    ok &= out["outcome"] == "aborted" and split is not None and split.weight(out["slot"] or "green") == 0

    _say("6. demo:v8 turns bad 8 s after it starts: the watch after promotion rolls it back")
    load = Load(url + "api/items", connections=8, max_requests=max_requests * 3, max_seconds=90).start()
    out = blue_green.run(environment="demo", image="demo:v8", config_dir=str(cdir), watch=30)
    res = load.stop()
    click.echo(f"   -> {out['outcome']}: {out['reason']}")
    click.echo(
        f"   traffic now: {rt.router.get_split()} serving {_serving(url)}; demo:v8 is marked "
        f"{(rt.ledger.release_verdict('demo', 'demo:v8') or {}).get('verdict')}"
    )
    _show_load(res)
    ok &= out["outcome"] == "rolled-back" and _serving(url) == "demo:v5"

    _say("7. an operator rolls back by hand: turnout rollback (demo:v5 -> the last known good before it)")
    from turnout.flows import rollback

    out = rollback.run(environment="demo", config_dir=str(cdir), reason="demo: rolled back by hand")
    click.echo(f"   -> {out['outcome']}: {out['reason']}")
    click.echo(f"   traffic now: {rt.router.get_split()} serving {_serving(url)}")
    ok &= out["outcome"] == "rolled-back" and _serving(url) == "demo:v2"

    _say("8. database migrations on the embedded SQLite default: lint, proved backup, dry run, apply, verify")
    env_file = cdir / "demo.toml"
    env_file.write_text(
        env_file.read_text() + f'\n[database]\ndefault_url = "sqlite:///{state_root / "state" / "app.db"}"\n'
        f'alembic_ini = "{app / "alembic.ini"}"\nbackup_before = true\n'
    )
    from sqlalchemy import create_engine, text

    from turnout.config import load_environment
    from turnout.database.apply import apply_migrations
    from turnout.database.project import AlembicProject
    from turnout.flows import migrate

    env = load_environment("demo", cdir)  # the database demo:v1 created: revision 0001 and 1000 items
    app_db = f"sqlite:///{state_root / 'state' / 'app.db'}"
    assert env.database is not None  # step 8 wrote the [database] table above
    apply_migrations(app_db, AlembicProject(env, env.database), env.database, target="0001")
    with create_engine(app_db).begin() as c:
        c.execute(
            text(
                "INSERT INTO items (name, legacy_code) VALUES "
                + ", ".join(f"('item {i}', 'L{i}')" for i in range(1000))
            )
        )
    click.echo("   the database is at 0001 with 1000 items")
    out = migrate.run(environment="demo", config_dir=str(cdir), dry_run_only=True)
    click.echo(f"   dry run -> {out['reason']}")
    out = migrate.run(environment="demo", config_dir=str(cdir), verify=True)
    click.echo(f"   -> {out['outcome']}: {out['reason']}")
    if out.get("deployment_id"):
        for x in rt.ledger.migration_lints(out["deployment_id"]):
            click.echo(f"   {x['revision']} {x['kind']:<8} {x['message'][:70]}")
        b = rt.ledger.backup_before(out["deployment_id"])
        if b:
            click.echo(
                f"   backup {Path(b['path']).name}: proved by a restore into a scratch copy "
                f"({b['proof']['tables']} tables, {b['proof']['rows']} rows, equal)"
            )
    ok &= out["outcome"] == "migrated"

    _say("9. the ledger")
    for d in rt.ledger.history("demo", 10):
        click.echo(
            f"   #{d['id']} {d['strategy']:<10} {d['release']:<9} "
            f"{d['from_slot'] or '-':>5} -> {d['to_slot'] or '-':<5} {d['status']:<9} {d['reason'][:80]}"
        )

    if keep:
        click.echo(f"\nleft running. Look:  turnout status -e demo --config-dir {cdir}")
        click.echo("stop it with:        turnout demo-stop  (or run `make demo-stop`)")
        if ui_url:
            click.echo(f"the runs in Prefect:  {ui_url}  (`turnout server status` shows it again)")
    else:
        _clean(cdir)
        click.echo("\ncleaned up: slots and NGINX stopped, demo state removed")
    click.secho("\ndemo " + ("succeeded" if ok else "FAILED"), bold=True, fg="green" if ok else "red")
    rt.close()
    return 0 if ok else 1


def stop_demo() -> None:
    """Stop a demo left running with --keep."""
    _, state_root, _ = demo_paths()
    _clean(state_root / "deployments")
