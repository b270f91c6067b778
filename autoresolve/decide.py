"""One approval, one decision: the first rule that applies; else the model's verdict, if it is
well-formed, confident enough and not an approval of an injection-risk request; else escalate
(leave it to a human)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from autoresolve.conditions import Call
from autoresolve.config import LlmConfig, Rule
from autoresolve.llm import LlmError, Model
from autoresolve.prompt import MalformedVerdict, parse_verdict, system_prompt, user_prompt
from policy.approvals import injection_risk

Action = Literal["approve", "deny", "escalate"]


@dataclass(frozen=True)
class Decision:
    action: Action
    by: str  # "rule:<name>", "model:<model>" or "none"
    confidence: float
    reasoning: str

    @property
    def resolved_by(self) -> str:
        """`supervisor:<rule name|model>` as recorded by the mesh."""
        return "supervisor:" + self.by.split(":", 1)[-1]


def call_of(approval: dict[str, Any]) -> Call:
    """What rule conditions see. `injection_risk` is the mesh's flag, or our own check of the
    params as shown (a mesh that does not flag is not trusted to be right)."""
    tool = str(approval.get("tool", ""))
    params = approval.get("params") if isinstance(approval.get("params"), dict) else {}
    return {
        "tool": tool,
        "server": tool.split(".", 1)[0],
        "agent": str(approval.get("agent_id", approval.get("agent", ""))),
        "policy_rule": str(approval.get("policy_rule", "")),
        "injection_risk": approval.get("injection_risk") is True or injection_risk(params),
        "params": params,
    }


def by_rules(rules: Sequence[Rule], call: Call) -> Decision | None:
    for rule in rules:
        if rule.applies(call):
            return Decision(rule.action, f"rule:{rule.name}", rule.confidence, rule.explain())
    return None


async def by_model(
    model: Model,
    config: LlmConfig,
    approval: dict[str, Any],
    call: Call,
    history: list[dict[str, Any]],
) -> Decision:
    by = f"model:{model.name}"
    view = approval | {"injection_risk": call["injection_risk"]}
    try:
        answer = await model.complete(
            system_prompt(config.instructions), user_prompt(view, history)
        )
        verdict = parse_verdict(answer)
    except LlmError as exc:
        return Decision("escalate", by, 0.0, f"model unavailable: {exc}")
    except MalformedVerdict as exc:
        return Decision("escalate", by, 0.0, f"model answer malformed: {exc}")
    said = f"the model said {verdict.decision} ({verdict.confidence:.2f}): {verdict.reasoning}"
    if verdict.decision == "escalate":
        return Decision("escalate", by, verdict.confidence, verdict.reasoning)
    if verdict.confidence < config.min_confidence:
        return Decision(
            "escalate",
            by,
            verdict.confidence,
            f"confidence below min_confidence {config.min_confidence:g}; {said}",
        )
    if verdict.decision == "approve" and call["injection_risk"]:
        return Decision(
            "escalate",
            by,
            verdict.confidence,
            f"injection_risk: never approved by the model alone; {said}",
        )
    return Decision(verdict.decision, by, verdict.confidence, verdict.reasoning)


async def decide(
    approval: dict[str, Any],
    rules: Sequence[Rule],
    model: Model | None,
    config: LlmConfig | None,
    history: list[dict[str, Any]],
    model_slots: asyncio.Semaphore | None = None,
) -> Decision:
    """`model_slots` bounds concurrent model calls; rules never wait for it."""
    call = call_of(approval)
    decision = by_rules(rules, call)
    if decision is not None:
        return decision
    if model is None or config is None:
        return Decision("escalate", "none", 0.0, "no rule applies and no model is configured")
    async with model_slots or contextlib.nullcontext():
        return await by_model(model, config, approval, call, history)
