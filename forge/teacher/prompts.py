"""The text protocol between forge.synth and any teacher (offline or an OpenAI-compatible LLM).

Two kinds of requests, told apart by their system prompt:

- solve: system = SOLVE_SYSTEM (+ the tool catalogue), user = the task prompt (instruction, and
  for action tasks the machine-checked success criterion as goal JSON), then alternating
  assistant `<action>` turns and `tool` `<ans>` observations (forge.gym.tags).
- propose: system = PROPOSE_SYSTEM, user = in-context example tasks and the scenarios that may
  be used, one JSON object per line; the answer is one JSON task per line.

The offline teacher reads the same prompts an LLM reads: nothing is passed to it on the side,
which is what lets `serve-teacher` put it behind a real HTTP endpoint.
"""

from __future__ import annotations

import json
import re
from typing import Any

from forge.gym.catalogue import TOOLS

SOLVE_SYSTEM = (
    "You are an LTE network operator agent. You act only through the tools listed below. "
    "Each turn, either call exactly one tool by ending your message with "
    '<action>{"tool": NAME, "args": {...}}</action>, after which the tool result arrives as '
    "<ans>...</ans>, or give your final answer (no action). Think briefly before each action. "
    "Quote only numbers you observed. For questions, put the answer in <answer>...</answer>."
)
PROPOSE_SYSTEM = (
    "TASK PROPOSAL. You write new, diverse tasks for an LTE network operator agent. Each task is "
    "tied to one of the listed scenarios and has a machine-checkable goal in forge's goal "
    "language: action tasks have a KPI predicate ({\"target\", \"metric\", \"op\", \"value\"}, "
    "or {\"all\": [...]}) that must hold after the agent's changes; qa tasks have "
    "{\"answer\": {\"type\", \"value\" | \"ref\": {\"target\", \"metric\"}, \"tol_abs\", "
    "\"tol_rel\"}}. Write one JSON object per line with the fields instruction, kind "
    "(action|qa), difficulty (L1|L2|L3), family, scenario_id, goal and pattern. Do not repeat "
    "the examples; vary wording, entities and thresholds. Output only the JSON lines."
)
CRITERION_HEAD = "Success criterion (checked by the operator's verifier on the final state): "
ANSWER_HINT = "Put the final answer in <answer></answer>."
SNAPSHOT_HEAD = "Snapshot of the current KPIs: "


def _sig(schema: dict[str, Any]) -> str:
    props = schema.get("properties", {})
    req = set(schema.get("required", []))
    parts = []
    for k, v in props.items():
        t = v.get("type", "object") if "enum" not in v else "|".join(map(str, v["enum"]))
        parts.append(f"{k}{'' if k in req else '?'}: {t}")
    return ", ".join(parts)


def tool_catalogue_text() -> str:
    """One line per tool: name(args) [effect] description. Compact: it is in every sample."""
    return "\n".join(f"- {t.name}({_sig(t.args)}) [{t.effect}] {t.description}" for t in TOOLS)


def solve_system_prompt() -> str:
    return f"{SOLVE_SYSTEM}\n\nTools:\n{tool_catalogue_text()}"


def task_prompt(instruction: str, kind: str, goal: dict[str, Any]) -> str:
    """The user message of a task: action tasks carry their success criterion as goal JSON
    (an operator's target is part of the job), qa tasks only the answer format (the expected
    answer is never shown)."""
    if kind == "action":
        crit = json.dumps(goal, separators=(",", ":"), sort_keys=True)
        return f"{instruction}\n\n{CRITERION_HEAD}{crit}"
    return f"{instruction}\n\n{ANSWER_HINT}"


_CRIT_RE = re.compile(re.escape(CRITERION_HEAD) + r"(\{.*\})\s*$", re.S)


def criterion_of(user_text: str) -> dict[str, Any] | None:
    m = _CRIT_RE.search(user_text)
    if not m:
        return None
    try:
        out = json.loads(m.group(1))
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def is_proposal(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and str(messages[0].get("content", "")).startswith("TASK PROPOSAL")


def proposal_prompt(examples: list[dict[str, Any]], scenarios: list[dict[str, Any]],
                    n: int, n_action: int | None = None) -> list[dict[str, str]]:
    """The proposal request; `n_action` asks for that many action tasks among the n (the rest
    qa), so that the mix does not drift towards whatever the teacher finds easiest."""
    ex = "\n".join(json.dumps(e, sort_keys=True) for e in examples)
    sc = "\n".join(json.dumps(s, sort_keys=True) for s in scenarios)
    mix = "" if n_action is None else f" ({n_action} action tasks, {n - n_action} qa tasks)"
    user = (f"Example tasks:\n{ex}\n\nScenarios you may use:\n{sc}\n\n"
            f"Write {n} new tasks{mix}, one JSON object per line.")
    return [{"role": "system", "content": PROPOSE_SYSTEM}, {"role": "user", "content": user}]


def parse_proposal_request(user_text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                    int, int | None]:
    """(examples, scenarios, n, n_action) back from a proposal prompt (what the offline teacher
    reads); n_action is None when the prompt does not ask for a mix."""
    ex_part, _, rest = user_text.partition("\n\nScenarios you may use:\n")
    sc_part, _, tail = rest.partition("\n\nWrite ")
    m = re.match(r"(\d+)", tail)
    mix = re.match(r"\d+ new tasks \((\d+) action tasks", tail)

    def lines(s: str) -> list[dict[str, Any]]:
        out = []
        for line in s.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    return (lines(ex_part.removeprefix("Example tasks:\n")), lines(sc_part),
            int(m.group(1)) if m else 1, int(mix.group(1)) if mix else None)
