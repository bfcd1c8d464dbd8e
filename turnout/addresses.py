"""Parsing and probing `host:port` addresses (slots, listen addresses)."""

from __future__ import annotations

import socket

__all__ = ["parse_address", "port_in_use", "free_port"]


def parse_address(value: str) -> tuple[str, int]:
    """Split `host:port`; raise ValueError naming what is wrong."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8081)")
    host, _, port_s = value.partition(":")
    if not host or any(c.isspace() or c in "{};'\"/" for c in host):
        raise ValueError(f"{value!r} has no valid host before ':'")
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f"{value!r} has no valid port (1-65535) after ':'")
    return host, int(port_s)


def port_in_use(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now (bind to port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
