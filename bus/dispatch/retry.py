"""Retry timing: exponential back-off with full jitter, bounded by attempts and by age.

Full jitter (a uniform delay in ``[0, min(max_delay, base·2ⁿ⁻¹)]``) spreads a burst of failed
deliveries so a recovering receiver is not hit by all of them at once. A transport's
``retry_after_seconds`` (HTTP ``Retry-After``) is a floor on the delay. No attempt is
scheduled past ``first_attempt_at + max_age``: the last one happens at that deadline — also
when a destination asks for a wait beyond it (a date centuries ahead, a 30-digit number).

A destination-wide failure (:func:`bus.dispatch.transport.destination_wide`: the
destination could not be reached at all) is the destination's, not the message's — a
Circuit Breaker: the destination is held for :func:`hold_after` (growing from ``base_delay``
to ``max_delay`` while it stays unreachable), the failed delivery waits for the hold's end
as the destination's next probe (:func:`decide_unreachable`) and the attempt does not count
toward ``max_attempts``; only ``max_age`` bounds it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from bus.config.models import RetryPolicy


@dataclass(frozen=True, slots=True)
class RetryDecision:
    dead: bool
    next_attempt_at: datetime | None
    reason: str | None = None  # why it is dead: "attempts" or "age"
    counted: bool = True  # counts toward max_attempts (not when the destination was unreachable)


def backoff(policy: RetryPolicy, attempts: int, rng: random.Random | None = None) -> timedelta:
    """The jittered delay after the ``attempts``-th failed attempt (1-based)."""
    exponent = min(max(attempts - 1, 0), 62)
    ceiling = min(policy.max_delay.total_seconds(), policy.base_delay.total_seconds() * 2**exponent)
    return timedelta(seconds=(rng or random).uniform(0.0, ceiling))


def decide(
    policy: RetryPolicy,
    *,
    attempts: int,
    first_attempt_at: datetime,
    now: datetime,
    retry_after_seconds: float | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """After a temporary failure: retry later, or dead-letter. ``attempts`` counts the
    attempt that just failed."""
    if attempts >= policy.max_attempts:
        return RetryDecision(dead=True, next_attempt_at=None, reason="attempts")
    deadline = first_attempt_at + policy.max_age
    if now >= deadline:
        return RetryDecision(dead=True, next_attempt_at=None, reason="age")
    left = (deadline - now).total_seconds()
    delay = backoff(policy, attempts, rng)
    if retry_after_seconds is not None:
        # capped before it becomes a timedelta: a destination's wait of 10²⁰ s must not
        # overflow (and fail the worker's whole round), it means "at the age limit"
        delay = max(delay, timedelta(seconds=min(max(retry_after_seconds, 0.0), left)))
    return RetryDecision(dead=False, next_attempt_at=min(now + delay, deadline))


def decide_unreachable(
    policy: RetryPolicy, *, first_attempt_at: datetime, now: datetime
) -> RetryDecision:
    """After a destination-wide failure: uncounted, dead only by age. Not rescheduled
    (``next_attempt_at`` None: unchanged): the destination's hold keeps it, and it stays
    the first due there, so the next probe is this same delivery — the others are not tried
    and do not age while the destination is down."""
    if now >= first_attempt_at + policy.max_age:
        return RetryDecision(dead=True, next_attempt_at=None, reason="age", counted=False)
    return RetryDecision(dead=False, next_attempt_at=None, counted=False)


def hold_after(policy: RetryPolicy, previous: timedelta | None) -> timedelta:
    """How long to hold a destination found unreachable: ``base_delay`` at first, twice the
    previous hold while the outage lasts (``previous``: the hold that just ended), at most
    ``max_delay`` — so a destination down for days is probed once every ``max_delay``."""
    base, ceiling = policy.base_delay, policy.max_delay
    step = base if previous is None else max(previous * 2, base)
    return min(step, ceiling, policy.max_age)
