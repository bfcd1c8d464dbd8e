"""The `nginx` traffic router: weighted upstreams in a file turnout owns, reloaded safely.

The split lives in one include file (`upstream.conf`), generated with `crossplane` (an NGINX
config builder and parser) and never by string pasting. It holds the upstream with one `server`
per slot address (`weight=`; a slot at 0% is `down`, and at least one server is always live),
a `map` naming the slot behind each upstream address, and a `map` carrying a generation number
that grows with every change. Applying a split:

1. build the new file and write it atomically (temp file + rename), keeping the previous one;
2. `nginx -t` on the whole configuration; on failure the previous file is restored;
3. `nginx -s reload` (or start the managed master when it is not running);
4. verify: requests through NGINX must come back carrying the new generation (and, for a 100%
   split, from the new slot) — a reload returning only means the signal was sent — and no worker
   from before the reload may still accept connections (until then one may meet the old split).

What NGINX *really* does is read from NGINX itself, never from the file (`observe`): a crash between
writing the file and the reload leaves a file NGINX never loaded. The loaded config announces its own
generation and split: managed mode answers `GET <status_path>` (loopback callers only) on its listener
with them; external mode reads them from `verify_url`'s response headers, and without one falls back to
comparing the file's age with the age of the master's workers.

Modes:
- managed  turnout runs its own NGINX master from `<state_dir>/nginx/`, listening on `listen`;
           responses carry `X-Turnout-Slot` and `X-Turnout-Generation`.
- external turnout owns only `include_file` inside an operator's NGINX (include it in `http {}`),
           runs `test_command` and `reload_command`, and verifies through `verify_url` (a server
           that adds the two headers above; see README) or, without it, by seeing the master
           replace its workers.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import signal
import subprocess
import time
from functools import reduce
from pathlib import Path
from typing import Any, Literal

import crossplane
import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

import turnout
from turnout.addresses import parse_address
from turnout.config import Environment
from turnout.errors import BackendError, ConfigError
from turnout.faults import crash_point
from turnout.health import http_client
from turnout.interfaces import Registration
from turnout.models import SLOTS, RouterState, Split
from turnout.procs import children_of, parent_of, pid_alive, process_started_at, start_ticks

NAME = "nginx"


class NginxConfig(BaseModel):
    """`[router]` settings for `kind = "nginx"`."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["managed", "external"] = "managed"
    listen: str = Field("127.0.0.1:8080", description="managed: where turnout's NGINX listens.")
    binary: str = Field("nginx", description="The nginx executable.")
    worker_processes: int = Field(1, ge=1, le=64, description="managed: worker processes.")
    keepalive: int = Field(16, ge=0, description="Idle keep-alive connections per worker to the slots.")
    access_log: bool = Field(False, description="managed: write an access log in the state directory.")
    include_file: str | None = Field(None, description="external: the file turnout owns (inside http {}).")
    test_command: list[str] = Field(default_factory=lambda: ["nginx", "-t", "-q"], description="external")
    reload_command: list[str] = Field(default_factory=lambda: ["nginx", "-s", "reload"], description="external")
    pid_file: str = Field("/run/nginx.pid", description="external: the operator's master pid file.")
    verify_url: str | None = Field(None, description="A URL through NGINX whose responses carry the headers.")
    verify_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a split to show.")
    verify_consecutive: int = Field(5, ge=1, description="Consecutive confirming responses required.")
    status_path: str = Field(
        "/.turnout/state",
        pattern=r"^/[A-Za-z0-9._/-]+$",
        description="managed: where NGINX itself answers its loaded generation and split (loopback callers only).",
    )

    @model_validator(mode="after")
    def _mode(self) -> NginxConfig:
        parse_address(self.listen)
        if self.mode == "external" and not self.include_file:
            raise ValueError("external mode needs include_file (the file turnout owns inside the operator's NGINX)")
        return self


class NginxRouter:
    """Drives one NGINX (managed or external) for one environment."""

    def __init__(self, config: NginxConfig, environment: Environment):
        self.config = config
        self.environment = environment
        self.var = environment.name.replace("-", "_")
        self.upstream = f"turnout_{self.var}"
        self.dir = environment.state_dir / "nginx"
        if config.mode == "managed":
            self.include = self.dir / "upstream.conf"
            self.main_conf: Path | None = self.dir / "nginx.conf"
            self.pid_file = self.dir / "nginx.pid"
        else:
            assert config.include_file is not None  # NginxConfig's validator requires it in external mode
            self.include = environment.resolve(config.include_file)
            self.main_conf = None
            self.pid_file = environment.resolve(config.pid_file)

    @property
    def listen_address(self) -> str | None:
        """Where this router itself listens (managed mode), so no slot is put there; None for external."""
        return self.config.listen if self.config.mode == "managed" else None

    # -- config generation -----------------------------------------------------------------------

    def _server_weights(self, split: Split, backends: dict[str, list[str]]) -> list[tuple[str, str, int]]:
        """(slot, address, weight) per server; a slot's weight is shared evenly by its replicas."""
        for slot in split.live_slots():
            if not backends.get(slot):
                raise BackendError(f"slot {slot} has weight {split.weight(slot)} but no address to send it to")
        counts = [len(backends.get(s, [])) for s in SLOTS if backends.get(s)]
        lcm = reduce(math.lcm, counts, 1)
        rows = [(s, a, split.weight(s) * lcm // len(backends[s])) for s in SLOTS for a in backends.get(s, [])]
        g = reduce(math.gcd, [w for _, _, w in rows if w], 0) or 1
        return [(s, a, w // g) for s, a, w in rows]

    def render_include(self, split: Split, backends: dict[str, list[str]], generation: int) -> str:
        """The include file for `split`, built with crossplane."""
        servers = []
        for _slot, addr, w in self._server_weights(split, backends):
            args = [addr, f"weight={max(w, 1)}"] + (["down"] if w == 0 else [])
            servers.append({"directive": "server", "args": args})
        if self.config.keepalive:
            servers.append({"directive": "keepalive", "args": [str(self.config.keepalive)]})
        slot_map = [{"directive": "default", "args": [""]}] + [
            {"directive": addr, "args": [slot]} for slot in SLOTS for addr in backends.get(slot, [])
        ]
        payload = [
            {"directive": "upstream", "args": [self.upstream], "block": servers},
            {"directive": "map", "args": ["$upstream_addr", f"$turnout_{self.var}_slot"], "block": slot_map},
            {
                "directive": "map",
                "args": ["$host", f"$turnout_{self.var}_generation"],
                "block": [{"directive": "default", "args": [str(generation)]}],
            },
            # the loaded config says its own split, so `observe` never has to trust this file
            {
                "directive": "map",
                "args": ["$host", f"$turnout_{self.var}_split"],
                "block": [{"directive": "default", "args": [_split_text(split)]}],
            },
        ]
        header = f"# managed by turnout: environment {self.environment.name}; do not edit\n"
        return header + crossplane.build(payload, indent=4) + "\n"

    def render_main(self) -> str:
        """managed mode: the whole nginx.conf, built with crossplane."""
        d = str(self.dir)
        temp = [
            {"directive": f"{k}_temp_path", "args": [f"{d}/tmp/{k}"]}
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ]
        location = [
            {"directive": "proxy_pass", "args": [f"http://{self.upstream}"]},
            {"directive": "proxy_http_version", "args": ["1.1"]},
            {"directive": "proxy_set_header", "args": ["Connection", '""']},
            {"directive": "proxy_set_header", "args": ["Host", "$host"]},
            {"directive": "proxy_set_header", "args": ["X-Forwarded-For", "$proxy_add_x_forwarded_for"]},
            {"directive": "add_header", "args": ["X-Turnout-Slot", f"$turnout_{self.var}_slot", "always"]},
            {"directive": "add_header", "args": ["X-Turnout-Generation", f"$turnout_{self.var}_generation", "always"]},
        ]
        state = [
            {"directive": "allow", "args": ["127.0.0.0/8"]},
            {"directive": "deny", "args": ["all"]},
            {"directive": "default_type", "args": ["text/plain"]},
            {"directive": "return", "args": ["200", f"$turnout_{self.var}_generation $turnout_{self.var}_split"]},
        ]
        http = [
            *temp,
            {"directive": "access_log", "args": [f"{d}/access.log"] if self.config.access_log else ["off"]},
            {"directive": "include", "args": [str(self.include)]},
            {
                "directive": "server",
                "args": [],
                "block": [
                    {"directive": "listen", "args": [self.config.listen]},
                    {"directive": "location", "args": ["=", self.config.status_path], "block": state},
                    {"directive": "location", "args": ["/"], "block": location},
                ],
            },
        ]
        payload = [
            {"directive": "worker_processes", "args": [str(self.config.worker_processes)]},
            {"directive": "pid", "args": [str(self.pid_file)]},
            {"directive": "error_log", "args": [f"{d}/error.log", "warn"]},
            {"directive": "events", "args": [], "block": [{"directive": "worker_connections", "args": ["1024"]}]},
            {"directive": "http", "args": [], "block": http},
        ]
        return (
            f"# managed by turnout: environment {self.environment.name}\n" + crossplane.build(payload, indent=4) + "\n"
        )

    def _read_include(self) -> dict[str, Any] | None:
        """Parse the current include file: weights per address, slot per address, generation."""
        if not self.include.is_file():
            return None
        parsed = crossplane.parse(str(self.include), single=True, check_ctx=False, comments=False)
        if parsed["status"] != "ok":
            raise BackendError(f"{self.include} cannot be parsed: {parsed['errors']}")
        servers, slots, generation = {}, {}, 0
        for d in parsed["config"][0]["parsed"]:
            if d["directive"] == "upstream" and d["args"] == [self.upstream]:
                for s in d["block"]:
                    if s["directive"] == "server":
                        w = next((int(a.split("=")[1]) for a in s["args"] if a.startswith("weight=")), 1)
                        servers[s["args"][0]] = 0 if "down" in s["args"] else w
            elif d["directive"] == "map" and d["args"][1] == f"$turnout_{self.var}_slot":
                slots = {m["directive"]: m["args"][0] for m in d["block"] if m["directive"] != "default"}
            elif d["directive"] == "map" and d["args"][1] == f"$turnout_{self.var}_generation":
                generation = int(d["block"][0]["args"][0])
        return {"servers": servers, "slots": slots, "generation": generation}

    # -- running nginx -------------------------------------------------------------------------

    def _run(self, argv: list[str], what: str) -> None:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BackendError(f"{what} failed: cannot run {' '.join(argv)}: {e}") from e
        if p.returncode != 0:
            msg = " / ".join(
                dict.fromkeys(line.strip() for line in (p.stderr or p.stdout).splitlines() if line.strip())
            )
            raise BackendError(f"{what} failed ({' '.join(argv)} exited {p.returncode}): {msg}")

    def _ctl(self, *args: str) -> list[str]:
        return [
            self.config.binary,
            "-p",
            str(self.dir),
            "-c",
            str(self.main_conf),
            "-e",
            str(self.dir / "error.log"),
            *args,
        ]

    def _test(self) -> None:
        if self.config.mode == "managed":
            self._run(self._ctl("-t", "-q"), "nginx config test")
        else:
            self._run(self.config.test_command, "nginx config test")

    def _master_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def running(self) -> bool:
        """True when the NGINX master is alive."""
        return self._master_pid() is not None

    def _record_workers(self) -> None:
        """Remember our master's workers (pid + start time): if the master dies they live on."""
        master = self._master_pid()
        if master is not None:
            rows = [(w, start_ticks(w)) for w in children_of(master)]
            _atomic_write(self.dir / "workers.json", json.dumps(rows))

    def _reap_orphaned_workers(self) -> None:
        """Stop workers a crashed master of ours left holding the listen socket (ours by pid + start time)."""
        try:
            rows = json.loads((self.dir / "workers.json").read_text())
        except (OSError, ValueError):
            return
        ours = [pid for pid, ticks in rows if ticks is not None and start_ticks(pid) == ticks]
        for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 2.0)):
            for pid in ours:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while any(pid_alive(p) for p in ours) and time.monotonic() < deadline:
                time.sleep(0.02)
        (self.dir / "workers.json").unlink(missing_ok=True)

    def _start_managed(self) -> None:
        self._reap_orphaned_workers()
        self._run(self._ctl(), "starting nginx")  # the master daemonizes and writes its pid file
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            master = self._master_pid()
            if master and children_of(master):
                self._record_workers()
                return
            time.sleep(0.02)
        raise BackendError(f"nginx did not start; see {self.dir / 'error.log'}")

    # -- TrafficRouter -------------------------------------------------------------------------

    def validate(self) -> None:
        """The binary must exist; external mode needs its include file's directory."""
        from shutil import which

        binary = self.config.binary if self.config.mode == "managed" else self.config.test_command[0]
        if which(binary) is None:
            raise ConfigError(
                f"router: {binary!r} not found on PATH; install NGINX (Debian: apt-get install nginx-light)"
            )
        if self.config.mode == "external" and not self.include.parent.is_dir():
            raise ConfigError(f"router.include_file: directory {self.include.parent} does not exist")

    def get_split(self) -> Split | None:
        """The split in the include file now (None before the first switch)."""
        cur = self._read_include()
        if not cur or not cur["servers"]:
            return None
        per_slot = {s: 0 for s in SLOTS}
        for addr, w in cur["servers"].items():
            slot = cur["slots"].get(addr)
            if slot in per_slot:
                per_slot[slot] += w
        total = sum(per_slot.values())
        if total == 0:
            return None
        blue = round(per_slot["blue"] * 100 / total)
        return Split(blue=blue, green=100 - blue)

    def generation(self) -> int:
        """The generation number of the include file now (0 before the first switch)."""
        cur = self._read_include()
        return cur["generation"] if cur else 0

    def observe(self) -> RouterState:
        """What NGINX serves now, read from NGINX itself: its loaded generation and split.

        The file is only the comparison: `configured` is what turnout last wrote, `split` what the
        running master loaded. A master that is not running, or a listener that does not answer, is
        `serving=False`.
        """
        cur = self._read_include()
        configured = self.get_split()
        file_gen = cur["generation"] if cur else 0
        master = self._master_pid()
        if master is None:
            where = self.pid_file if self.config.mode == "external" else self.dir
            return RouterState(
                serving=False, split=None, configured=configured, detail=f"no NGINX master is running ({where})"
            )
        if self.config.mode == "managed":
            return self._observe_status(configured, file_gen)
        if self.config.verify_url:
            return self._observe_headers(self.config.verify_url, configured, file_gen)
        return self._observe_workers(master, configured)

    def _observe_status(self, configured: Split | None, file_gen: int) -> RouterState:
        """managed: ask our own listener's status location (served by NGINX from its loaded config)."""
        url = f"http://{self.config.listen}{self.config.status_path}"
        try:
            with http_client(2.0, headers={"Connection": "close"}) as client:
                r = client.get(url)
        except httpx.HTTPError as e:
            return RouterState(
                serving=False,
                split=None,
                configured=configured,
                detail=f"NGINX does not answer on {self.config.listen}: {type(e).__name__}: {e}",
            )
        gen, _, text = r.text.strip().partition(" ")
        if r.status_code != 200 or not gen.isdigit():
            # an older config without the status location, or another server on the port
            if r.headers.get("x-turnout-generation"):
                return self._from_generation(
                    r.headers["x-turnout-generation"], r.headers.get("x-turnout-split"), configured, file_gen, url
                )
            return RouterState(
                serving=False,
                split=None,
                configured=configured,
                detail=f"{url} answered HTTP {r.status_code} without turnout's state: "
                f"is another server listening on {self.config.listen}?",
            )
        return self._from_generation(gen, text, configured, file_gen, url)

    def _observe_headers(self, url: str, configured: Split | None, file_gen: int) -> RouterState:
        """external with verify_url: the generation (and split) headers of a response through NGINX."""
        try:
            with http_client(2.0, headers={"Connection": "close"}) as client:
                r = client.get(url)
        except httpx.HTTPError as e:
            return RouterState(
                serving=False,
                split=None,
                configured=configured,
                detail=f"NGINX does not answer at {url}: {type(e).__name__}: {e}",
            )
        gen = r.headers.get("x-turnout-generation")
        if not gen:
            return RouterState(
                serving=True,
                split=None,
                configured=configured,
                known=False,
                detail=f"{url} answers without X-Turnout-Generation: add the headers (README)",
            )
        return self._from_generation(gen, r.headers.get("x-turnout-split"), configured, file_gen, url)

    def _from_generation(
        self, gen: str, split_text: str | None, configured: Split | None, file_gen: int, url: str
    ) -> RouterState:
        loaded = _parse_split(split_text) if split_text else None
        if loaded is None and gen == str(file_gen):
            loaded = configured  # the loaded generation is the file's: its split is the file's
        detail = f"NGINX at {url} serves generation {gen}" + (
            "" if gen == str(file_gen) else f"; the file holds generation {file_gen}, never loaded"
        )
        return RouterState(
            serving=True,
            split=loaded,
            configured=configured,
            known=loaded is not None,
            generation=int(gen) if gen.isdigit() else None,
            detail=detail,
        )

    def _observe_workers(self, master: int, configured: Split | None) -> RouterState:
        """external without verify_url: the file is loaded when every worker started after it was written."""
        try:
            written = self.include.stat().st_mtime
        except OSError:
            return RouterState(
                serving=True,
                split=None,
                configured=None,
                known=configured is None,
                detail="turnout's include file does not exist yet",
            )
        workers = children_of(master)
        started = [process_started_at(w) for w in workers]
        if workers and all(t is not None and t >= written for t in started):
            return RouterState(
                serving=True,
                split=configured,
                configured=configured,
                detail=f"every worker of master {master} started after {self.include} was written",
            )
        return RouterState(
            serving=True,
            split=None,
            configured=configured,
            known=False,
            detail=f"workers of master {master} predate {self.include}: it may not be loaded; set "
            "verify_url to let turnout read the loaded split",
        )

    def plan(self, split: Split, backends: dict[str, list[str]]) -> str:
        """A unified diff of the include file."""
        old = self.include.read_text() if self.include.is_file() else ""
        new = self.render_include(split, backends, self.generation() + 1)
        diff = difflib.unified_diff(
            old.splitlines(True), new.splitlines(True), str(self.include) + " (now)", str(self.include) + " (planned)"
        )
        return "".join(diff) or "(no change)\n"

    def apply(self, split: Split, backends: dict[str, list[str]]) -> None:
        """Write, test, reload; the previous file comes back if the test or the reload fails."""
        cur = self._read_include()
        if cur and self.get_split() == split and self._backends_match(cur, backends):
            now = self.observe()
            if now.serving and now.generation == cur["generation"]:
                return  # idempotent: already loaded and in force (a written but unloaded file is reloaded)
        new = self.render_include(split, backends, (cur["generation"] if cur else 0) + 1)
        self.include.parent.mkdir(parents=True, exist_ok=True)
        if self.main_conf is not None:  # managed mode: turnout writes NGINX's whole config
            (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
            _atomic_write(self.main_conf, self.render_main())
        prev = self.include.with_name(self.include.name + ".prev")
        had_prev = self.include.is_file()
        if had_prev:
            os.replace(self.include, prev)
        try:
            crash_point("router-write:before")
            _atomic_write(self.include, new)
            crash_point("router-write:after")  # the file says the new split, NGINX still serves the old one
            self._test()
            crash_point("router-reload:before")
            self._last_workers = set()
            if self.config.mode == "managed" and not self.running():
                self._start_managed()
            elif self.config.mode == "managed":
                self._last_workers = children_of(self._master_pid() or 0)
                self._run(self._ctl("-s", "reload"), "nginx reload")
            else:
                master = self._master_pid()
                if master is None:
                    raise BackendError(f"the operator's NGINX is not running (no live master in {self.pid_file})")
                self._last_workers = children_of(master)
                self._run(self.config.reload_command, "nginx reload")
        except BackendError:
            if had_prev:
                os.replace(prev, self.include)
            else:
                self.include.unlink(missing_ok=True)
            raise
        crash_point("router-reload:after")

    def _backends_match(self, cur: dict[str, Any], backends: dict[str, list[str]]) -> bool:
        return cur["slots"] == {a: s for s in SLOTS for a in backends.get(s, [])}

    def verify(self, split: Split, backends: dict[str, list[str]], timeout: float | None = None) -> dict[str, Any]:
        """Wait until NGINX serves the new generation (and the right slot); evidence or BackendError."""
        timeout = timeout or self.config.verify_timeout
        url = self.config.verify_url or (f"http://{self.config.listen}/" if self.config.mode == "managed" else None)
        if url is None:
            return self._verify_workers(timeout)
        want_gen = str(self.generation())
        live = set(split.live_slots())
        need = self.config.verify_consecutive
        seen: dict[str, int] = {}  # responses per slot
        streak, probes, last = 0, 0, ""
        start = time.monotonic()
        with http_client(2.0, headers={"Connection": "close"}) as client:
            while time.monotonic() - start < timeout:
                probes += 1
                try:
                    r = client.get(url)
                    gen, slot = r.headers.get("x-turnout-generation"), r.headers.get("x-turnout-slot", "")
                    last = f"HTTP {r.status_code} generation={gen} slot={slot or '-'}"
                    # the new config must be in force *and* the answer must come from a live slot
                    ok = gen == want_gen and slot in live and r.status_code < 500
                    if gen == want_gen:
                        seen[slot or "-"] = seen.get(slot or "-", 0) + 1
                except httpx.HTTPError as e:
                    ok, last = False, f"{type(e).__name__}: {e}"
                streak = streak + 1 if ok else 0
                if streak >= need:
                    # New workers answer with the new config while the old ones may still accept new
                    # connections with the old one (the master sleeps before telling them to quit, longer
                    # on a loaded machine): in force means none of them accepts any more.
                    old_left = self._old_workers_accepting(timeout - (time.monotonic() - start))
                    if old_left:
                        raise BackendError(
                            f"NGINX serves generation {want_gen}, but worker(s) {sorted(old_left)} with the "
                            f"previous config still accept connections after {timeout:g}s"
                        )
                    if self.config.mode == "managed":
                        self._record_workers()
                    return {
                        "verified_by": url,
                        "generation": int(want_gen),
                        "probes": probes,
                        "seconds": round(time.monotonic() - start, 3),
                        "slots_seen": seen,
                    }
                time.sleep(0.01 if ok else 0.05)
        raise BackendError(
            f"NGINX did not confirm split {split} (generation {want_gen}) within {timeout:g}s at {url}; "
            f"last response: {last}"
        )

    def _old_workers_accepting(self, timeout: float) -> set[int]:
        """Wait (up to `timeout`) until no worker from before the last reload accepts; those that still do."""
        old: set[int] = getattr(self, "_last_workers", set())
        master = self._master_pid()
        if not old or master is None:
            return set()
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            left = {w for w in old if _accepting(w) and parent_of(w) == master}
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.02)

    def _verify_workers(self, timeout: float) -> dict[str, Any]:
        """Without a verify URL: new workers exist and every old one has stopped accepting.

        After SIGHUP the master starts new workers, sleeps ~100 ms, then tells the old ones to quit;
        until then they still accept connections with the old config.
        """
        old: set[int] = getattr(self, "_last_workers", set())
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            master = self._master_pid()
            if master is None:
                raise BackendError(f"the NGINX master in {self.pid_file} died during the reload")
            workers = children_of(master)
            if workers - old and not any(_accepting(w) for w in old & workers):
                return {
                    "verified_by": "new workers",
                    "workers": sorted(workers - old),
                    "seconds": round(time.monotonic() - start, 3),
                }
            time.sleep(0.02)
        raise BackendError(f"NGINX did not replace its workers within {timeout:g}s; the reload was not applied")

    def stop(self) -> None:
        """managed: stop our master (SIGQUIT, then SIGTERM); external: nothing to stop."""
        if self.config.mode != "managed":
            return None
        pid = self._master_pid()
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(self.main_conf).encode() not in f.read():
                    return None  # not the master we started
        except OSError:
            return None
        os.kill(pid, signal.SIGQUIT)
        # wait on the process itself: the master removes its pid file before it has exited
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        return None


def _split_text(split: Split) -> str:
    """How the loaded config states its split (`blue=90,green=10`)."""
    return ",".join(f"{s}={split.weight(s)}" for s in SLOTS)


def _parse_split(text: str) -> Split | None:
    """The inverse of `_split_text`; None for anything else."""
    try:
        weights = dict(part.split("=", 1) for part in text.strip().split(","))
        return Split(**{s: int(weights[s]) for s in SLOTS})
    except (ValueError, KeyError):
        return None


def _accepting(pid: int) -> bool:
    """An NGINX worker still serving new connections (not exited, not "shutting down")."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"shutting down" not in f.read() and pid_alive(pid)
    except OSError:
        return False


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@turnout.hookimpl
def register_routers() -> list[Registration]:
    """The NGINX router."""
    return [Registration(NAME, NginxConfig, NginxRouter, "NGINX upstream weights (managed or external)")]
