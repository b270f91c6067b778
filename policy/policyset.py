"""A policy set: the policies one version of the config declares, with the content hash that
names the version (in traces as `policy_version`) and a generation that orders versions (each
accepted reload is the next generation). Pure: the reloader (gateway/reload.py) does the I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from policy.model import Policy


def wire(policies: Sequence[Policy]) -> list[dict[str, Any]]:
    """Policies as plain maps that validate back to equal policies (only what was set, by the
    YAML names: a condition's form is what it sets)."""
    return [p.model_dump(mode="json", by_alias=True, exclude_unset=True) for p in policies]


def version_of(policies: Sequence[Policy]) -> str:
    """The content hash of a set: equal policies in the same order have the same version."""
    text = json.dumps(wire(policies), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PolicySet:
    generation: int
    version: str
    policies: tuple[Policy, ...]

    @classmethod
    def of(cls, policies: Sequence[Policy], generation: int) -> PolicySet:
        return cls(generation, version_of(policies), tuple(policies))

    def dump(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "version": self.version,
            "policies": wire(self.policies),
        }

    @classmethod
    def load(cls, data: Any) -> PolicySet:
        """From `dump()`'s map; raises ValueError (pydantic's included) if it is not one. The
        version is recomputed: a set is what its policies say, whatever the map claims."""
        if not isinstance(data, dict) or not isinstance(data.get("generation"), int):
            # ValueError, as pydantic's: callers catch one kind
            raise ValueError("not a policy set: expected {generation, version, policies}")  # noqa: TRY004
        policies = [Policy.model_validate(p) for p in data.get("policies") or []]
        return cls.of(policies, data["generation"])
