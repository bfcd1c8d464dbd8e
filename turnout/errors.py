"""The errors turnout raises, each mapped to one CLI exit code.

    TurnoutError
    ├── ConfigError        bad input or configuration; nothing was touched      → exit 2
    │   └── LockHeld       another deployment holds the environment             → exit 2
    ├── BackendError       a router, target or tool failed                       → exit 1 (after rollback)
    └── UnsafeState        turnout could not reach a known-safe state            → exit 3

Every message names the thing to fix: the file and key, the slot, the command that failed.
"""

from __future__ import annotations

__all__ = [
    "TurnoutError",
    "ConfigError",
    "LockHeld",
    "BackendError",
    "UnsafeState",
    "EXIT_OK",
    "EXIT_ABORTED",
    "EXIT_BAD_INPUT",
    "EXIT_UNSAFE",
]

EXIT_OK = 0
EXIT_ABORTED = 1
EXIT_BAD_INPUT = 2
EXIT_UNSAFE = 3


class TurnoutError(Exception):
    """Base class of every error turnout raises on purpose."""

    exit_code = EXIT_ABORTED


class ConfigError(TurnoutError):
    """Bad input or configuration, found before anything was changed."""

    exit_code = EXIT_BAD_INPUT


class LockHeld(ConfigError):
    """Another deployment is running in this environment; this one was refused, not queued."""


class BackendError(TurnoutError):
    """A backend (router, target, external command) failed to do what was asked."""


class UnsafeState(TurnoutError):
    """turnout could not bring the environment back to a state known to be safe."""

    exit_code = EXIT_UNSAFE
