"""A bounded HTTP load through a router, for the demo and the benchmarks (never for production).

Threads of keep-alive `httpx` clients send GETs until a request budget or a time limit runs out.
Like a real client, an idempotent GET whose *reused* keep-alive connection was closed under it
(which every NGINX reload does once per connection) is retried once on a fresh connection; those
retries are counted separately, so "errors" means what a user would have seen.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["LoadResult", "Load"]


@dataclass
class LoadResult:
    """What the load saw."""

    requests: int = 0
    ok: int = 0
    non_2xx: int = 0
    connection_errors: int = 0
    retried: int = 0
    seconds: float = 0.0
    by_release: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (t, release) per response

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no timeline)."""
        return {
            "requests": self.requests,
            "ok": self.ok,
            "non_2xx": self.non_2xx,
            "connection_errors": self.connection_errors,
            "retried_after_keepalive_close": self.retried,
            "seconds": round(self.seconds, 2),
            "rps": round(self.requests / self.seconds, 1) if self.seconds else 0,
            "by_release": dict(self.by_release),
            "by_status": {str(k): v for k, v in self.by_status.items()},
        }


class Load:
    """Start with `start()`, end with `stop()` (or let the budget run out); bounded either way."""

    def __init__(
        self,
        url: str,
        *,
        connections: int = 8,
        max_requests: int = 5000,
        max_seconds: float = 60.0,
        release_header: str = "x-release",
        keep_timeline: bool = False,
    ):
        if not url.startswith(("http://127.", "http://localhost")):
            raise ValueError(f"load is only ever sent to this machine, not to {url}")
        self.url, self.connections = url, connections
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.release_header, self.keep_timeline = release_header, keep_timeline
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0

    def _take(self) -> bool:
        with self._lock:
            if self.result.requests >= self.max_requests:
                return False
            self.result.requests += 1
            return True

    def _worker(self) -> None:
        with httpx.Client(timeout=5.0, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) as c:
            while not self._stop.is_set() and time.monotonic() - self._t0 < self.max_seconds and self._take():
                status: int | str | None = None  # the HTTP status, or the error that stood in for one
                release, retried = "", False
                for attempt in range(2):
                    try:
                        r = c.get(self.url)
                        status, release = r.status_code, r.headers.get(self.release_header, "")
                        break
                    except (httpx.RemoteProtocolError, httpx.ReadError) as e:
                        if attempt == 0:  # the reused connection was closed by a reload: retry once
                            retried = True
                            continue
                        status = repr(e)
                    except httpx.HTTPError as e:
                        status = repr(e)
                        break
                with self._lock:
                    res = self.result
                    res.retried += retried
                    if isinstance(status, int):
                        res.by_status[status] += 1
                        res.by_release[release or "-"] += 1
                        if 200 <= status < 300:
                            res.ok += 1
                        else:
                            res.non_2xx += 1
                        if self.keep_timeline:
                            res.timeline.append((time.monotonic() - self._t0, release))
                    else:
                        res.connection_errors += 1

    def start(self) -> Load:
        """Begin sending in background threads."""
        self._t0 = time.monotonic()
        for _ in range(self.connections):
            t = threading.Thread(target=self._worker, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> LoadResult:
        """Stop sending, wait for the threads, return what was seen."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self.result.seconds = time.monotonic() - self._t0
        return self.result

    def wait(self) -> LoadResult:
        """Wait for the budget (requests or time) to run out."""
        for t in self._threads:
            t.join(timeout=self.max_seconds + 10)
        return self.stop()
