"""The text protocol of trajectories: `<action>` in assistant turns, `<ans>` in tool turns.

An assistant turn that calls a tool ends with exactly one
    <action>{"tool": NAME, "args": {...}}</action>
(free reasoning text may precede it, nothing may follow it); the next message has role `tool` and
is exactly `<ans>OBSERVATION-JSON</ans>`. The final assistant turn has no tags except an optional
`<answer>...</answer>` holding the answer of a qa task.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ACTION_OPEN, ACTION_CLOSE = "<action>", "</action>"
ANS_OPEN, ANS_CLOSE = "<ans>", "</ans>"


@dataclass
class TagProblem:
    code: str
    message: str


def render_action(tool: str, args: dict[str, Any], thought: str = "") -> str:
    call = json.dumps({"tool": tool, "args": args}, separators=(", ", ": "))
    return f"{thought.strip()}\n{ACTION_OPEN}{call}{ACTION_CLOSE}".lstrip()


def has_action(content: str) -> bool:
    return ACTION_OPEN in content or ACTION_CLOSE in content


def parse_action(content: str) -> tuple[Any, TagProblem | None]:
    """(parsed call, None) or (None, problem). The call is whatever JSON the tag holds: the env
    judges its shape, so a well-tagged but wrong call is an execution-time error observation."""
    n_open, n_close = content.count(ACTION_OPEN), content.count(ACTION_CLOSE)
    if n_open > 1 or n_close > 1:
        return None, TagProblem("multiple_actions", f"{max(n_open, n_close)} <action> tags in "
                                                    f"one turn (exactly one allowed)")
    if n_open != 1 or n_close != 1:
        return None, TagProblem("malformed_tag", "unbalanced <action> tag")
    start = content.index(ACTION_OPEN) + len(ACTION_OPEN)
    end = content.index(ACTION_CLOSE)
    if end < start:
        return None, TagProblem("malformed_tag", "</action> before <action>")
    if content[end + len(ACTION_CLOSE):].strip():
        return None, TagProblem("text_after_action", "text after </action> (an assistant turn "
                                                     "must stop at its action)")
    if ANS_OPEN in content or ANS_CLOSE in content:
        return None, TagProblem("assistant_wrote_observation",
                                "an assistant turn contains <ans> (observations come from tools)")
    try:
        return json.loads(content[start:end]), None
    except ValueError as e:
        return None, TagProblem("action_not_json", f"<action> does not hold JSON: {e}")


ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_WORD = re.compile(r"[A-Za-z]{2,}")


def final_problem(content: str) -> TagProblem | None:
    """What is wrong with a final assistant turn (one without an action), or None. It must say
    something in words (at least two words outside the answer tags: an operator reads it) and
    hold at most one well-formed `<answer>...</answer>`; a turn that repeats or cuts off its
    answer tags is garbage however lucky the value inside."""
    n_open, n_close = content.count(ANSWER_OPEN), content.count(ANSWER_CLOSE)
    if n_open > 1 or n_close > 1:
        return TagProblem("malformed_answer", f"{max(n_open, n_close)} <answer> tags in the "
                                              f"final turn (at most one pair)")
    if n_open != n_close:
        return TagProblem("malformed_answer", "unbalanced <answer> tag")
    prose = content
    if n_open:
        a, b = content.index(ANSWER_OPEN), content.index(ANSWER_CLOSE)
        if b < a:
            return TagProblem("malformed_answer", "</answer> before <answer>")
        prose = content[:a] + " " + content[b + len(ANSWER_CLOSE):]
    if len(_WORD.findall(prose)) < 2:
        return TagProblem("no_explanation", "the final turn says nothing in words besides its "
                                            "answer")
    return None


def parse_ans(content: str) -> tuple[Any, TagProblem | None]:
    """The observation JSON inside a tool message, which must be exactly <ans>...</ans>."""
    s = content.strip()
    if not (s.startswith(ANS_OPEN) and s.endswith(ANS_CLOSE)) or s.count(ANS_OPEN) != 1 \
            or s.count(ANS_CLOSE) != 1:
        return None, TagProblem("malformed_tag", "a tool message must be exactly <ans>...</ans>")
    try:
        return json.loads(s[len(ANS_OPEN):-len(ANS_CLOSE)]), None
    except ValueError as e:
        return None, TagProblem("observation_not_json", f"<ans> does not hold JSON: {e}")
