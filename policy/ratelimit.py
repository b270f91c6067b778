"""Call counting checked before any policy rule (compat.md §2): per-policy rate limits and loops.

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
LoopKey = tuple[str, str, str]  # (agent id, tool, params fingerprint)

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
    """Refuses the `threshold`-th identical call (same agent, tool, params) within `window` s.

    Refused calls are not recorded, so an agent that stops repeating recovers once its
    earlier calls leave the window. Memory: keys whose calls all left the window are dropped,
    and at most `max_keys` keys are kept (least recently recorded evicted first).
    """

    def __init__(self, threshold: int = 3, window: float = 10.0, max_keys: int = 10_000) -> None:
        if threshold < 2:
            raise ValueError("threshold must be >= 2 (1 would refuse every call)")
        if window <= 0 or max_keys < 1:
            raise ValueError("window must be > 0 and max_keys >= 1")
        self.threshold = threshold
        self.window = window
        self._max_keys = max_keys
        self._calls: OrderedDict[LoopKey, deque[float]] = OrderedDict()

    def check(self, agent: str, tool: str, params: Mapping[str, Any], now: float) -> str | None:
        """An error text if this call would be the `threshold`-th identical one, else None."""
        key = (agent, tool, fingerprint(params))
        stamps = self._calls.get(key)
        if stamps is None:
            return None
        _prune(stamps, now, self.window)
        if not stamps:
            del self._calls[key]
            return None
        if len(stamps) >= self.threshold - 1:
            return (
                f"loop detected: agent {agent} called {tool} with the same params "
                f"{self.threshold} times within {self.window:g}s "
                f"(loop_detection threshold={self.threshold}, window={self.window:g}s)"
            )
        return None

    def record(self, agent: str, tool: str, params: Mapping[str, Any], now: float) -> None:
        """Remember one call made at `now`."""
        key = (agent, tool, fingerprint(params))
        stamps = self._calls.get(key)
        if stamps is None:
            # Only the latest threshold-1 calls can ever decide a refusal.
            stamps = self._calls[key] = deque(maxlen=self.threshold - 1)
        self._calls.move_to_end(key)
        stamps.append(now)
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        # Keys are ordered by last record, so stale ones sit at the front: amortized O(1).
        cutoff = now - self.window
        while self._calls:
            oldest_key, oldest = next(iter(self._calls.items()))
            if len(self._calls) <= self._max_keys and oldest[-1] > cutoff:
                break
            del self._calls[oldest_key]

    def __len__(self) -> int:
        return len(self._calls)
