"""A token bucket: bursts up to ``burst``, then ``rate`` per second on average.

Used for limits on what one caller does through the API (REST writes per user, WebSocket
frames per connection), where a short burst is normal (a page marking a few
notifications read) and a sustained flood is not. Pure: time is passed in, in seconds
of any monotonic clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BucketPolicy:
    """How fast the bucket refills and how much it holds."""

    rate: float
    """Tokens added per second (the sustained rate allowed)."""
    burst: int
    """Capacity: how many actions may happen at once after a quiet period."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """A bucket's level at a moment."""

    tokens: float
    """Tokens available at ``at``."""
    at: float
    """When ``tokens`` was measured (seconds)."""


@dataclass(frozen=True, slots=True)
class Taken:
    """The outcome of one attempt to take a token."""

    allowed: bool
    bucket: Bucket
    """The bucket after the attempt (unchanged level when refused)."""
    retry_after_seconds: float
    """0 when allowed; otherwise how long until one token is back (rounded up to the millisecond)."""


def full(policy: BucketPolicy, *, now: float) -> Bucket:
    """A bucket nobody has taken from yet."""
    return Bucket(float(policy.burst), now)


def level(bucket: Bucket, policy: BucketPolicy, *, now: float) -> float:
    """Tokens available at ``now`` (a clock going backwards refills nothing)."""
    return min(float(policy.burst), bucket.tokens + max(0.0, now - bucket.at) * policy.rate)


def take(bucket: Bucket | None, policy: BucketPolicy, *, now: float) -> Taken:
    """Take one token at ``now`` if there is one."""
    current = level(bucket or full(policy, now=now), policy, now=now)
    if current >= 1.0:
        return Taken(True, Bucket(current - 1.0, now), 0.0)
    wait = (1.0 - current) / policy.rate
    return Taken(False, Bucket(current, now), math.ceil(round(wait * 1000, 6)) / 1000)


def is_full(bucket: Bucket, policy: BucketPolicy, *, now: float) -> bool:
    """Whether forgetting the bucket would change nothing (it has refilled completely)."""
    return level(bucket, policy, now=now) >= policy.burst
