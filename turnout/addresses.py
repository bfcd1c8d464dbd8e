"""Parsing and probing `host:port` addresses (slots, listen addresses)."""

from __future__ import annotations

import socket

__all__ = ["parse_address", "resolve", "same_socket", "port_in_use", "free_port"]


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


def resolve(host: str, port: int) -> set[str]:
    """The IP addresses `host` resolves to; raise ValueError naming the host when it does not resolve.

    A name lookup only (getaddrinfo): nothing is sent to the host itself.
    """
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"host {host!r} does not resolve ({getattr(e, 'strerror', None) or e})") from None


_WILDCARDS = {"0.0.0.0", "::", "*"}


def same_socket(a: str, b: str) -> bool:
    """True when the `host:port` addresses a and b name the same listening socket (after resolving names)."""
    (ha, pa), (hb, pb) = parse_address(a), parse_address(b)
    if pa != pb:
        return False
    if ha in _WILDCARDS or hb in _WILDCARDS:  # a wildcard listener holds the port on every local address
        return True
    try:
        return bool(resolve(ha, pa) & resolve(hb, pb))
    except ValueError:
        return ha == hb


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
