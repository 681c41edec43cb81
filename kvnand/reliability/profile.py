"""Usage profiles: how a device is used over its life, and the decode sessions that follow from it.

A profile owns the shape of a session and the duty. A session is one KV cache from its first prompt
to its release: `turns` requests that append to the same cache (a chat conversation; 1 for independent
requests). At context C each turn adds C/turns tokens, of which `output_tokens` are generated one decode
step at a time and the rest is prompt (prefilled at once). The decode step at context c reads the KV
of c tokens. The duty is the decode rate (tokens/s; None = the system's own rate at that point), hours
of decoding per day and years of service.

`--set profile.FIELD=value` (or `overrides={"profile.FIELD": value}`) changes one field of a preset.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from kvnand.errors import InputError

SECONDS_PER_DAY = 86_400.0
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class Profile:
    name: str
    output_tokens: int              # generated per turn (capped at the tokens a turn adds)
    turns: int = 1                  # requests per session sharing one KV cache
    tokens_per_s: float | None = None
    hours_per_day: float = 24.0
    years: float = 5.0
    description: str = ""


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("continuous", 1000, 1, None, 24.0, 5.0,
            "back-to-back single requests around the clock, 1000 tokens generated each"),
    Profile("chat", 300, 8, None, 2.0, 5.0,
            "conversations of 8 turns sharing one KV cache, 300 tokens generated per turn, 2 h of decoding a day"),
    Profile("long-doc", 500, 1, None, 8.0, 5.0,
            "long-document questions: the context is mostly prompt, 500 tokens generated, 8 h a day"),
)}


@dataclass(frozen=True)
class Session:
    """Decode steps of one session: turn j decodes at contexts turns[j][0] .. turns[j][1] - 1."""

    turns: tuple[tuple[int, int], ...]
    context: int                    # tokens in the KV cache when the session ends

    @property
    def decode_steps(self) -> int:
        return sum(b - a for a, b in self.turns)

    @property
    def prefills(self) -> int:
        return len(self.turns)

    @property
    def mean_decode_context(self) -> int:
        return round(sum((a + b - 1) * (b - a) / 2 for a, b in self.turns) / self.decode_steps)


def session(profile: Profile, context: int) -> Session:
    bounds = [round(j * context / profile.turns) for j in range(profile.turns + 1)]
    turns = tuple((end - min(profile.output_tokens, end - start), end)
                  for start, end in zip(bounds, bounds[1:], strict=False) if end > start)
    return Session(turns, context)


_FIELDS = {f.name: f for f in dataclasses.fields(Profile) if f.name not in ("name", "description")}


def get_profile(profile: str | Profile, overrides: dict | None = None) -> Profile:
    """A preset by name (or a Profile), with the `profile.*` keys of `overrides` applied."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise InputError("unknown usage profile", key="profile", value=profile, allowed=", ".join(PROFILES))
        profile = PROFILES[profile]
    changes = {name: _number(key, value, integer=name in ("output_tokens", "turns"), nullable=name == "tokens_per_s",
                             allowed=_RANGES[name][2])
               for name, (key, value) in prefixed(overrides, "profile", _FIELDS, "profile field").items()}
    for name, (key, _) in prefixed(overrides, "profile", _FIELDS, "profile field").items():
        lo, hi, allowed = _RANGES[name]
        v = changes[name]
        if v is not None and not lo < v <= hi:
            raise InputError("out of range", key=key, value=v, allowed=allowed)
    return dataclasses.replace(profile, **changes)


# field -> (exclusive low, inclusive high, what is allowed): generous, finite, so every rate and count stays finite
_RANGES = {
    "output_tokens": (0, 10**9, "an integer 1 to 1e9"),
    "turns": (0, 10**6, "an integer 1 to 1e6"),
    "tokens_per_s": (0, 1e9, "a rate > 0 and <= 1e9 tokens/s, or none (the system's own)"),
    "hours_per_day": (0, 24, "hours > 0 and <= 24"),
    "years": (0, 100, "years > 0 and <= 100"),
}


def prefixed(overrides: dict | None, prefix: str, names, what: str) -> dict[str, tuple[str, object]]:
    """The `prefix.NAME` keys of `overrides` as {NAME: (key, value)}; a NAME outside `names` is an InputError."""
    out = {}
    for key, value in (overrides or {}).items():
        if key.startswith(prefix + "."):
            name = key.removeprefix(prefix + ".")
            if name not in names:
                raise InputError(f"unknown {what}", key=key, allowed=", ".join(f"{prefix}.{n}" for n in names))
            out[name] = (key, value)
    return out


def _number(key: str, value, *, integer: bool, nullable: bool, allowed: str):
    if nullable and (value is None or str(value).strip().lower() in ("none", "null", "auto")):
        return None  # tokens_per_s: the system's own decode rate
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError("not a number", key=key, value=value, allowed=allowed) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or (
            integer and value != int(value)):
        raise InputError("not an integer" if integer else "not a finite number", key=key, value=value,
                         allowed=allowed)
    return int(value) if integer else float(value)
