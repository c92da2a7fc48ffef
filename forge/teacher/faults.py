"""Endpoint faults shared by the OpenAI-compatible client and the synthesis loop (kept apart
from `openai_client` so that the loop does not import the HTTP stack for the offline teacher)."""

from __future__ import annotations

import contextvars

from forge.teacher.base import TeacherError

# What a call is for, (purpose, ref): ("solve", task_id) or ("propose", "round r prompt k").
# Set by the loop around each episode or proposal prompt, recorded with every fault in
# llm_faults so that a fault can be traced to what it hit. A ContextVar: each asyncio task (one
# episode) has its own value.
CALL_CONTEXT: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "forge_call_context", default=None)


class EndpointFault(TeacherError):
    """The endpoint kept failing one call (retries used up, or a fault a retry cannot fix: a
    4xx, a second timeout). The loop records the task or prompt and goes on."""

    def __init__(self, kind: str, message: str, tries: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.tries = tries
