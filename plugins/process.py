"""The `process` deploy target: each slot runs the release as a detached local process.

The command is a template (a list of arguments, never a shell string) with the placeholders
`{image}`, `{host}`, `{port}`, `{slot}`, `{python}` (this interpreter) and `{state_dir}`. For
each slot address one process is started in its own session, so it outlives the turnout run
that started it; its PID, start time, command and log files are recorded in
`<state_dir>/slots/<slot>/`. Stopping sends SIGTERM to its process group, then SIGKILL after
`stop_grace` seconds. Only processes whose PID *and* start time match the record are signalled,
so a recycled PID is never killed.

A slot's process gets only the environment its file names (see `slot_environment`): a small base,
`env` values and the `pass_env` variables, never the rest of turnout's environment (which may
hold secrets such as a Slack webhook or a database URL meant for turnout alone).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

import turnout
from turnout.addresses import parse_address, port_in_use, resolve
from turnout.config import Environment
from turnout.errors import BackendError, ConfigError
from turnout.interfaces import Registration
from turnout.models import SLOTS, SlotStatus, utcnow
from turnout.procs import start_ticks

NAME = "process"
_PLACEHOLDERS = {"image", "host", "port", "slot", "python", "state_dir"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SET_BY_TURNOUT = ("TURNOUT_SLOT", "TURNOUT_RELEASE")
# What every slot inherits from turnout's environment, and why: PATH finds the command and what it runs;
# LANG and LC_* give it the operator's text encoding (Python's UTF-8 mode, sorting, formatting); TZ makes
# its log times match turnout's; HOME is where runtimes and libraries look for their config and caches
# (many fail without it). Nothing else: secrets and turnout's own settings stay with turnout.
_BASE_ENV = ("PATH", "LANG", "TZ", "HOME")


def slot_environment(
    env: dict[str, str], pass_env: list[str], slot: str, release: str, source: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a slot's process: the base, `pass_env` names from `source`, `env`, slot and release."""
    src: Mapping[str, str] = os.environ if source is None else source
    out = {k: v for k, v in src.items() if k in _BASE_ENV or k.startswith("LC_")}
    out.update({k: src[k] for k in pass_env if k in src})
    out.update(env)  # a value written in the file wins over one passed through
    out.update(TURNOUT_SLOT=slot, TURNOUT_RELEASE=release)
    return out


def _address(value: str) -> str:
    parse_address(value)
    return value


Address = Annotated[str, AfterValidator(_address)]


class ProcessConfig(BaseModel):
    """`[target]` settings for `kind = "process"`."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(
        ..., min_length=1, description="Argument list with {image} {host} {port} {slot} {python} {state_dir}."
    )
    slots: dict[str, list[Address]] = Field(..., description="blue/green -> host:port (or a list of them).")
    cwd: str | None = Field(None, description="Working directory, relative to the project root.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables set for the slot's processes.")
    pass_env: list[str] = Field(
        default_factory=list, description="Names of turnout's environment variables passed through to the slots."
    )
    stop_grace: float = Field(10.0, ge=0, description="Seconds between SIGTERM and SIGKILL.")

    @field_validator("slots", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: [x] if isinstance(x, str) else x for k, x in v.items()}
        return v

    @field_validator("command")
    @classmethod
    def _template(cls, v: list[str]) -> list[str]:
        import string

        for arg in v:
            for _, field, _, _ in string.Formatter().parse(arg):
                if field is not None and field not in _PLACEHOLDERS:
                    raise ValueError(f"unknown placeholder {{{field}}} in {arg!r}; known: {sorted(_PLACEHOLDERS)}")
        return v

    @field_validator("pass_env")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name (letters, digits, '_')")
            if name in _SET_BY_TURNOUT:
                raise ValueError(f"{name} is set by turnout for each slot; it cannot be passed through")
        return v

    @model_validator(mode="after")
    def _two_slots(self) -> ProcessConfig:
        if set(self.slots) != set(SLOTS):
            raise ValueError(f"slots must name exactly blue and green, got {sorted(self.slots)}")
        seen: set[str] = set()
        for slot, addrs in self.slots.items():
            if not addrs:
                raise ValueError(f"slot {slot} has no address")
            for a in addrs:
                if a in seen:
                    raise ValueError(f"address {a} is used by more than one slot")
                seen.add(a)
        return self


class ProcessTarget:
    """Runs releases as local processes, one per slot address."""

    def __init__(self, config: ProcessConfig, environment: Environment):
        self.config = config
        self.environment = environment
        self.root = environment.state_dir / "slots"
        self._children: dict[int, subprocess.Popen] = {}

    # -- helpers -------------------------------------------------------------------------------

    def _slot_dir(self, slot: str) -> Path:
        return self.root / slot

    def _records(self, slot: str) -> list[dict[str, Any]]:
        d = self._slot_dir(slot)
        out = []
        for p in sorted(d.glob("replica-*.json")) if d.is_dir() else []:
            try:
                out.append(json.loads(p.read_text()) | {"_file": str(p)})
            except (OSError, json.JSONDecodeError):
                continue
        return out

    def _alive(self, rec: dict[str, Any]) -> bool:
        child = self._children.get(rec["pid"])
        if child is not None and child.poll() is not None:
            return False
        return start_ticks(rec["pid"]) == rec.get("start_ticks")

    def _argv(self, slot: str, release: str, address: str) -> list[str]:
        host, port = parse_address(address)
        values = dict(
            image=release,
            host=host,
            port=port,
            slot=slot,
            python=sys.executable,
            state_dir=str(self.environment.state_dir),
        )
        return [arg.format(**values) for arg in self.config.command]

    def _cwd(self) -> Path:
        return self.environment.resolve(self.config.cwd) if self.config.cwd else self.environment.root

    # -- DeployTarget --------------------------------------------------------------------------

    def validate(self) -> None:
        """The working directory must exist and every slot host must resolve (a name lookup; nothing is sent)."""
        if not self._cwd().is_dir():
            raise ConfigError(f"target.cwd: directory {self._cwd()} does not exist")
        for slot, addresses in self.config.slots.items():
            for address in addresses:
                try:
                    resolve(*parse_address(address))
                except ValueError as e:
                    raise ConfigError(f"target.slots.{slot}: {address}: {e}") from None

    def endpoints(self, slot: str) -> list[str]:
        """The slot's configured addresses."""
        return list(self.config.slots[slot])

    def describe_start(self, slot: str, release: str) -> list[str]:
        """The command lines `start` would run."""
        return [" ".join(self._argv(slot, release, a)) + f"   (cwd {self._cwd()})" for a in self.endpoints(slot)]

    def start(self, slot: str, release: str) -> list[str]:
        """Stop what runs in `slot`, check its addresses are free, start one process per address."""
        self.stop(slot)
        for addr in self.endpoints(slot):
            if port_in_use(*parse_address(addr)):
                raise BackendError(
                    f"slot {slot} address {addr} is already in use by a process turnout did not start; "
                    "stop it or change [target.slots]"
                )
        d = self._slot_dir(slot)
        d.mkdir(parents=True, exist_ok=True)
        env = slot_environment(self.config.env, self.config.pass_env, slot, release)
        urls = []
        for i, addr in enumerate(self.endpoints(slot)):
            argv = self._argv(slot, release, addr)
            out, err = d / f"replica-{i}.out.log", d / f"replica-{i}.err.log"
            with open(out, "ab") as fo, open(err, "ab") as fe:
                try:
                    proc = subprocess.Popen(
                        argv,
                        cwd=self._cwd(),
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=fo,
                        stderr=fe,
                        start_new_session=True,
                    )
                except OSError as e:
                    raise BackendError(f"slot {slot}: cannot run {argv[0]!r}: {e}") from e
            self._children[proc.pid] = proc
            record = dict(
                pid=proc.pid,
                start_ticks=start_ticks(proc.pid),
                release=release,
                address=addr,
                argv=argv,
                stdout=str(out),
                stderr=str(err),
                started_at=utcnow().isoformat(),
            )
            tmp = d / f".replica-{i}.json.tmp"
            tmp.write_text(json.dumps(record, indent=2))
            os.replace(tmp, d / f"replica-{i}.json")
            urls.append(f"http://{addr}")
        return urls

    def stop(self, slot: str) -> None:
        """TERM the slot's process groups, KILL what is left after the grace period."""
        recs = self._records(slot)
        live = [r for r in recs if self._alive(r)]
        for r in live:
            _signal_group(r["pid"], signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_grace
        while any(self._alive(r) for r in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        for r in live:
            if self._alive(r):
                _signal_group(r["pid"], signal.SIGKILL)
        for r in live:  # reap our own children so they do not linger as zombies
            child = self._children.pop(r["pid"], None)
            if child is not None:
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        for r in recs:
            Path(r["_file"]).unlink(missing_ok=True)

    def status(self, slot: str) -> SlotStatus:
        """running (every replica up), exited (a replica died), or stopped (nothing recorded)."""
        recs = self._records(slot)
        if not recs:
            return SlotStatus(slot=slot, state="stopped", endpoints=self.endpoints(slot))
        dead = [r for r in recs if not self._alive(r)]
        detail = ""
        if dead:
            r = dead[0]
            child = self._children.get(r["pid"])
            code = child.returncode if child is not None else None
            detail = f"process {r['pid']} ({r['address']}) exited" + (f" with code {code}" if code is not None else "")
            tail = [line.strip() for line in _tail(Path(r["stderr"]), 3).splitlines() if line.strip()]
            if tail:
                detail += f"; last stderr: {' | '.join(tail)}"
        return SlotStatus(
            slot=slot,
            state="exited" if dead else "running",
            release=recs[0].get("release"),
            endpoints=[r["address"] for r in recs],
            pid=recs[0]["pid"],
            detail=detail,
        )

    def logs(self, slot: str, lines: int = 100) -> str:
        """The tail of each replica's stdout and stderr."""
        d = self._slot_dir(slot)
        parts = []
        for p in sorted(d.glob("replica-*.log")) if d.is_dir() else []:
            parts.append(f"==> {p.name} <==\n{_tail(p, lines)}")
        return "\n".join(parts)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session, so its group id is its pid
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@turnout.hookimpl
def register_targets() -> list[Registration]:
    """The process target."""
    return [Registration(NAME, ProcessConfig, ProcessTarget, "local processes, one per slot address")]
