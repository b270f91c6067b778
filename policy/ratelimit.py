"""Call counting checked before any policy rule (docs/compat.md): per-policy rate limits and
loop detection, both only for a policy that declares `rate_limit`.

Pure state machines: the caller passes `now` (seconds, non-decreasing, e.g. time.monotonic()).
Not thread-safe; one instance per policy worker, calls serialized.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policy.model import RateLimit

RateKey = tuple[str, str]  # (policy name, agent id)
LoopKey = tuple[str, str, str, str]  # (policy name, agent id, tool, params fingerprint)

RATE_WINDOW = 60.0  # seconds; `max_per_minute` is a sliding window of this length


@dataclass
class _Usage:
    recent: deque[float] = field(default_factory=deque)  # timestamps inside the window
    total: int = 0  # since process start


def _prune(stamps: deque[float], now: float, window: float) -> None:
    # A call made exactly `window` seconds ago has left the window: (now - window, now].
    cutoff = now - window
    while stamps and stamps[0] <= cutoff:
        stamps.popleft()


class RateLimiter:
    """`max_per_minute` (sliding 60 s window) and `max_total` per (policy name, agent id).

    Memory: each key keeps only timestamps inside the window; at most `max_keys` keys are kept,
    least recently used evicted first. Evicting a key resets its `max_total` count — an accepted
    weakness, since agent ids are self-declared and a caller can switch ids anyway.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._max_keys = max_keys
        self._usage: OrderedDict[RateKey, _Usage] = OrderedDict()

    def check(self, key: RateKey, limit: RateLimit, now: float) -> str | None:
        """An error text naming the exceeded limit, or None if one more call is allowed."""
        usage = self._usage.get(key)
        if usage is None:
            return None  # no calls yet; every limit is >= 1
        policy, agent = key
        # The total budget first: it never recovers, so it is the more useful message.
        if limit.max_total is not None and usage.total >= limit.max_total:
            return _rate_text(f"max_total={limit.max_total}", agent, policy)
        if limit.max_per_minute is not None:
            _prune(usage.recent, now, RATE_WINDOW)
            if len(usage.recent) >= limit.max_per_minute:
                return _rate_text(f"max_per_minute={limit.max_per_minute}", agent, policy)
        return None

    def record(self, key: RateKey, now: float) -> None:
        """Count one call made at `now`."""
        usage = self._usage.get(key)
        if usage is None:
            usage = self._usage[key] = _Usage()
        self._usage.move_to_end(key)
        usage.recent.append(now)
        usage.total += 1
        _prune(usage.recent, now, RATE_WINDOW)
        while len(self._usage) > self._max_keys:
            self._usage.popitem(last=False)

    def __len__(self) -> int:
        return len(self._usage)


def _rate_text(which: str, agent: str, policy: str) -> str:
    return f"rate limit exceeded: {which} for agent {agent} (policy {policy})"


def fingerprint(params: Mapping[str, Any]) -> str:
    """A stable digest of params: dict key order does not matter; large params stay small."""
    try:
        text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):  # non-str keys of mixed types, circular references
        text = repr(params)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class LoopDetector:
    """Loop detection per (policy name, agent id): more than `limit.loop_threshold` identical
    calls (same tool and params) within `limit.loop_window` seconds are refused; threshold 0 is off.

    Refused calls are not recorded, so an agent that stops repeating recovers once its
    earlier calls leave the window. Memory: keys whose calls all left their window are dropped,
    and at most `max_keys` keys are kept (least recently recorded evicted first).
    """

    def __init__(self, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._max_keys = max_keys
        self._calls: OrderedDict[LoopKey, _Calls] = OrderedDict()

    def check(
        self, key: RateKey, tool: str, params: Mapping[str, Any], limit: RateLimit, now: float
    ) -> str | None:
        """An error text if this call would be one identical call too many, else None."""
        if limit.loop_threshold == 0:
            return None
        loop_key = (*key, tool, fingerprint(params))
        calls = self._calls.get(loop_key)
        if calls is None:
            return None
        _prune(calls.stamps, now, calls.window)
        if not calls.stamps:
            del self._calls[loop_key]
            return None
        if len(calls.stamps) < limit.loop_threshold:
            return None
        policy, agent = key
        return (
            f"loop detected: agent {agent} called {tool} with the same params more than "
            f"{limit.loop_threshold} times within {limit.loop_window:g}s (policy {policy}: "
            f"loop_threshold={limit.loop_threshold}, loop_window={limit.loop_window:g}s)"
        )

    def record(
        self, key: RateKey, tool: str, params: Mapping[str, Any], limit: RateLimit, now: float
    ) -> None:
        """Remember one call made at `now`."""
        if limit.loop_threshold == 0:
            return
        loop_key = (*key, tool, fingerprint(params))
        calls = self._calls.get(loop_key)
        if calls is None:
            # Only the latest `threshold` calls can ever decide a refusal.
            calls = self._calls[loop_key] = _Calls(limit.loop_window, limit.loop_threshold)
        self._calls.move_to_end(loop_key)
        calls.stamps.append(now)
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        # Keys are ordered by last record, so stale ones sit at the front: amortized O(1).
        while self._calls:
            oldest_key, oldest = next(iter(self._calls.items()))
            if len(self._calls) <= self._max_keys and oldest.stamps[-1] > now - oldest.window:
                break
            del self._calls[oldest_key]

    def __len__(self) -> int:
        return len(self._calls)


class _Calls:
    """The recent identical calls of one loop key, and the window they are judged in."""

    __slots__ = ("stamps", "window")

    def __init__(self, window: float, threshold: int) -> None:
        self.window = window
        self.stamps: deque[float] = deque(maxlen=threshold)
