"""The vocabulary every layer shares: slots, traffic splits, releases, gate verdicts, events.

Plain pydantic models with no I/O, so the judge, the flows and the plugins can all use them and
tests can build them by hand.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema, field_validator, model_validator

__all__ = [
    "SLOTS",
    "Slot",
    "other_slot",
    "validate_release",
    "Release",
    "RELEASE_PATTERN",
    "Split",
    "Outcome",
    "Phase",
    "Verdict",
    "DeploymentEvent",
    "SlotStatus",
    "RouterState",
    "utcnow",
]

Slot = Literal["blue", "green"]
SLOTS: tuple[str, str] = ("blue", "green")

# A release is an image reference (`registry/app:tag`, `app@sha256:…`) or a plain version (`v2`).
# It ends up in command lines, NGINX comments and container names, so only the characters an image
# reference can hold are allowed: no whitespace, quotes, `;`, `{`, `}`, `$` or newlines.
RELEASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$"
_RELEASE_RE = re.compile(RELEASE_PATTERN)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the ledger stores nothing else)."""
    return datetime.now(UTC)


def other_slot(slot: str) -> str:
    """The slot that is not `slot`."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}; slots are {', '.join(SLOTS)}")
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


def _shown(image: str, limit: int = 60) -> str:
    # An error echoes what was given, but never a screenful of it: the first characters say which one it was.
    return repr(image) if len(image) <= limit else repr(image[:limit] + "…") + f" ({len(image)} characters)"


def validate_release(image: str) -> str:
    """Return `image` if it is a safe release name, else raise ValueError saying which character is wrong."""
    if not isinstance(image, str) or not image:
        raise ValueError("the release (--image) is empty")
    bad = sorted({c for c in image if not re.match(r"[A-Za-z0-9._/:@+-]", c)})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:10])
        raise ValueError(
            f"release {_shown(image)} contains characters that are not allowed in an image name: {shown} "
            "(allowed: letters, digits and . _ / : @ + -)"
        )
    if not _RELEASE_RE.match(image):
        raise ValueError(
            f"release {_shown(image)} is not a valid image name: it must start with a letter or digit "
            "and be at most 255 characters"
        )
    return image


# A flow parameter that is a release: checked once, by `validate_release` (its message names the bad
# character), while Prefect's form still shows the pattern.
Release = Annotated[
    str, AfterValidator(validate_release), WithJsonSchema({"type": "string", "pattern": RELEASE_PATTERN})
]


class Split(BaseModel):
    """Traffic weights per slot; they always sum to 100 and at least one slot carries traffic."""

    blue: int = Field(0, ge=0, le=100)
    green: int = Field(0, ge=0, le=100)

    @model_validator(mode="after")
    def _sums_to_100(self) -> Split:
        if self.blue + self.green != 100:
            raise ValueError(f"weights must sum to 100, got blue={self.blue} green={self.green}")
        return self

    @classmethod
    def all_to(cls, slot: str) -> Split:
        """A split sending 100% to `slot`."""
        return cls(**{slot: 100, other_slot(slot): 0})

    @classmethod
    def canary(cls, stable: str, weight: int) -> Split:
        """`weight`% to the slot that is not `stable`, the rest to `stable`."""
        return cls(**{other_slot(stable): weight, stable: 100 - weight})

    def weight(self, slot: str) -> int:
        """The weight of one slot."""
        return getattr(self, slot)

    def live_slots(self) -> list[str]:
        """Slots with a non-zero weight."""
        return [s for s in SLOTS if self.weight(s) > 0]

    def as_dict(self) -> dict[str, int]:
        """{"blue": w, "green": w}."""
        return {s: self.weight(s) for s in SLOTS}

    def __str__(self) -> str:
        return f"blue={self.blue} green={self.green}"


class Outcome(str, enum.Enum):  # noqa: UP042 - StrEnum would change f"{member}" from "Outcome.PASS"
    """How a measurement or gate ended (Argo Rollouts' vocabulary)."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


class Phase(str, enum.Enum):  # noqa: UP042 - StrEnum would change f"{member}" from "Phase.PRE_DEPLOY"
    """When a gate runs."""

    PRE_DEPLOY = "pre-deploy"
    PRE_TRAFFIC = "pre-traffic"
    POST_SWITCH = "post-switch"
    STEP = "step"
    WATCH = "watch"
    POST_ROLLBACK = "post-rollback"


class Verdict(BaseModel):
    """What a gate said, with the evidence it said it on."""

    gate: str
    phase: Phase
    outcome: Outcome
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True only for PASS: inconclusive and error never let a deployment through."""
        return self.outcome is Outcome.PASS


class SlotStatus(BaseModel):
    """What a deploy target knows about one slot."""

    slot: str
    state: Literal["running", "stopped", "exited", "unknown"]
    release: str | None = None
    endpoints: list[str] = Field(default_factory=list)
    pid: int | None = None
    detail: str = ""

    @property
    def running(self) -> bool:
        """True when the slot's release is up (not necessarily healthy)."""
        return self.state == "running"


class RouterState(BaseModel):
    """What a router really does now, established through the router itself — never from a file turnout wrote.

    `configured` is what turnout last wrote (the router's file or API object); `split` is what the
    running router has loaded, when it can tell (`known`). A crash between writing and loading leaves
    the two different; recovery decides on `split` and puts the router back in sync before anything else.
    """

    serving: bool = Field(description="The router runs and answers.")
    split: Split | None = Field(description="The split in force, None when not serving, never routed or unknown.")
    configured: Split | None = Field(description="The split turnout last wrote.")
    known: bool = Field(True, description="False when the router cannot tell its loaded split.")
    generation: int | None = Field(None, description="The loaded config's generation, when the router has one.")
    detail: str = Field("", description="How it was established, or why not.")

    @property
    def routed(self) -> bool:
        """True once turnout ever routed traffic here (something was written)."""
        return self.configured is not None or self.split is not None

    @property
    def in_sync(self) -> bool:
        """The router serves exactly what turnout last wrote."""
        return self.serving and self.known and self.split == self.configured

    def describe(self) -> str:
        """One line for `status` and recovery's reasons."""
        if not self.serving:
            return f"NOT SERVING ({self.detail})" if self.routed else "not routed yet"
        if not self.known:
            return f"{self.configured} written, loaded split unknown ({self.detail})"
        if self.split != self.configured:
            return f"{self.split} (turnout's file says {self.configured}, never loaded)"
        return str(self.split)


class DeploymentEvent(BaseModel):
    """One thing that happened during a deployment, broadcast to every plugin and notifier."""

    kind: str  # e.g. "deployment.started", "phase.started", "traffic.shifted", "deployment.finished"
    environment: str
    deployment_id: int | None = None
    release: str | None = None
    phase: str | None = None
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    urgent: bool = False  # a human should look now: notifiers deliver it whatever their event filter
    at: datetime = Field(default_factory=utcnow)

    @field_validator("kind")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if "." not in v:
            raise ValueError("event kinds are dotted, e.g. 'deployment.started'")
        return v
