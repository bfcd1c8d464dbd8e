"""A throw-away environment for the benchmarks: managed NGINX and the demo service on free ports."""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(name: str = "bench", extra: str = "", rollback: str = "watch = 0") -> tuple[Path, str]:
    """Write deployments/<name>.toml in a temp dir; return (config dir, router URL)."""
    root = Path(tempfile.mkdtemp(prefix="turnout-bench-"))
    cdir = root / "deployments"
    cdir.mkdir()
    listen, blue, green = (f"127.0.0.1:{free_port()}" for _ in range(3))
    from turnout.app.demo import demo_environment

    (cdir / f"{name}.toml").write_text(
        demo_environment(
            name,
            f".turnout/{name}",
            listen,
            blue,
            green,
            health="timeout = 30\ninterval = 0.1",
            extra=extra,
            rollback=rollback,
        )
    )
    return cdir, f"http://{listen}/"


def cleanup(cdir: Path, name: str = "bench") -> None:
    """Stop the slots and NGINX the benchmark started (by their recorded PIDs)."""
    from turnout.runtime import open_runtime

    rt = open_runtime(name, cdir, check=False)
    for slot in ("blue", "green"):
        rt.target.stop(slot)
    rt.router.stop()
