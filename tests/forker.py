"""Run `turnout` commands as fresh processes without paying for Python and Prefect's imports each time.

`python tests/forker.py` imports what a command needs once (the warm runner's list, turnout.app.warm),
then reads one JSON request a line on stdin — `{"argv": [...], "env": {...}, "cwd": ..., "out": path,
"err": path}` — forks a child that runs the command exactly as the CLI's entry point would (its own
pid, so it holds the environment's lock; a crash point SIGKILLs only it), waits for it and answers
`{"exit": code}` (a negative code: the signal that killed it). The crash matrix runs dozens of
commands that each die at a crash point; this keeps every case to the time of the run itself.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path


def serve() -> None:
    from turnout.app.warm import _PRELOAD

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        sys.stdout.write(json.dumps({"exit": code}) + "\n")
        sys.stdout.flush()


def _child(req: dict) -> None:
    code = 3
    try:
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)  # not the request pipe
        os.dup2(null, 0)
        os.close(null)
        for fd, path in ((1, req["out"]), (2, req["err"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
        sys.argv = ["turnout", *req["argv"]]
        from turnout.app.cli import main

        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class Forker:
    """The test side: start the server once, run commands through it."""

    def __init__(self, tmp: Path):
        self.tmp, self.n = tmp, 0
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "TURNOUT_WARM": "0"},
        )
        ready = json.loads(self.proc.stdout.readline())
        self.pid = ready["ready"]

    def run(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `turnout ARGV` in a fresh child: a CompletedProcess like subprocess.run's."""
        self.n += 1
        out, err = self.tmp / f"cmd-{self.n}.out", self.tmp / f"cmd-{self.n}.err"
        req = {
            "argv": list(argv),
            "env": {**os.environ, "TURNOUT_WARM": "0", **(env or {})},
            "cwd": str(cwd),
            "out": str(out),
            "err": str(err),
        }
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return subprocess.CompletedProcess(argv, reply["exit"], out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    serve()
