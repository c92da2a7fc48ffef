"""What every teacher offers the synthesis loop: `chat(messages, params) -> Completion`.

A teacher is a chat model: it gets the messages (system, user, assistant, tool) and returns the
next assistant message. Proposing tasks and solving them are both chat calls (see
`forge.teacher.prompts`), so an OpenAI-compatible endpoint and the embedded offline teacher are
interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from forge.db import ForgeError


@dataclass
class Completion:
    text: str
    finish_reason: str = "stop"           # "stop" | "length" (cut off by max_tokens)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenParams:
    """Generation parameters: part of the cache key of every call."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "seed": self.seed}


class Teacher(Protocol):
    name: str

    async def chat(self, messages: list[dict[str, Any]], params: GenParams) -> Completion: ...


class TeacherError(ForgeError):
    """A teacher cannot be used (bad configuration)."""


class TeacherUnreachable(TeacherError):
    """The endpoint does not answer: the run stops early instead of failing every task."""


class BudgetExhausted(TeacherError):
    """--max-tokens-total is used up: the run stops cleanly after storing what it has."""


def estimate_tokens(text: str) -> int:
    """~4 characters per token (GPT-style BPE on English and JSON): used where no tokenizer
    is available (the offline teacher reports usage with it; it is labelled an estimate)."""
    return max(1, (len(text) + 3) // 4)
