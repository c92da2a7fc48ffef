"""The offline teacher: a real planner (forge.teacher.policy) and task writer
(forge.teacher.proposer) behind the chat interface, with no network and no LLM.

Solving is stateless from the caller's point of view - the next turn is a function of the
messages and the request seed - which is what an HTTP endpoint needs. Internally each
conversation's planner is a live generator kept in an LRU of sessions keyed by a hash of the
transcript so far; a request whose prefix is not in the LRU (another process, a restart) is
answered by replaying the transcript's observations through a fresh generator, which yields the
same turns because all randomness comes from the request seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from forge.gym.env import CachedModel
from forge.gym.tags import ACTION_CLOSE, ACTION_OPEN, ANS_CLOSE, ANS_OPEN
from forge.teacher.base import Completion, GenParams, estimate_tokens
from forge.teacher.policy import PolicyConfig, PolicyGen, solve_gen
from forge.teacher.prompts import is_proposal, parse_proposal_request
from forge.teacher.proposer import Resolver, TaskWriter

NAME = "offline-planner-v1"


@dataclass
class OfflineConfig:
    mistake_rate: float = field(default=0.03, metadata={
        "help": "Per tool call: probability of a wrong call first (then recovered)."})
    format_error_rate: float = field(default=0.01, metadata={
        "help": "Per turn: probability of a malformed turn (attempt rejected at parse)."})
    proposal_mistake_rate: float = field(default=0.05, metadata={
        "help": "Per proposed task: probability of an invalid proposal (must be rejected)."})
    compose_rate: float = field(default=0.3, metadata={
        "help": "Probability that an action goal gets a second pattern as side constraint."})
    l1_even_share: float = field(default=0.0, metadata={
        "help": "Share of L1 question proposals whose pattern is drawn evenly from all L1 "
                "question patterns (the rest favour the tool-teaching ones)."})
    max_steps: int = field(default=24, metadata={"help": "Tool calls the planner may use."})
    sessions: int = field(default=4096, metadata={"help": "Live conversations kept in memory."})


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()[:32]


def _session_key(messages: list[dict[str, Any]], params: GenParams) -> str:
    """Key of a conversation state: the roles and contents (not JSON-encoded: this runs on
    every turn over the whole transcript) plus the sampling parameters."""
    h = hashlib.sha256(f"{params.seed}|{params.temperature}".encode())
    for m in messages:
        h.update(str(m.get("role", "")).encode())
        h.update(b"\x00")
        h.update(str(m.get("content", "")).encode())
        h.update(b"\x01")
    return h.hexdigest()[:32]


def _obs_of(content: str) -> dict[str, Any] | None:
    s = content.strip()
    if s.startswith(ANS_OPEN) and s.endswith(ANS_CLOSE):
        try:
            out = json.loads(s[len(ANS_OPEN):-len(ANS_CLOSE)])
            return out if isinstance(out, dict) else None
        except ValueError:
            return None
    return None


class OfflineTeacher:
    def __init__(self, model: CachedModel, resolver: Resolver,
                 cfg: OfflineConfig | None = None) -> None:
        self.cfg = cfg or OfflineConfig()
        self.name = NAME
        self.writer = TaskWriter(model, resolver, compose_rate=self.cfg.compose_rate,
                                 mistake_rate=self.cfg.proposal_mistake_rate,
                                 l1_even_share=self.cfg.l1_even_share)
        self.policy_cfg = PolicyConfig(mistake_rate=self.cfg.mistake_rate,
                                       format_error_rate=self.cfg.format_error_rate,
                                       max_steps=self.cfg.max_steps)
        self._sessions: OrderedDict[str, PolicyGen] = OrderedDict()
        self._lock = threading.Lock()
        self.replays = 0
        self.failures = 0

    async def chat(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        return self.complete(messages, params)

    def complete(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        """Synchronous chat (the embedded fast path and the HTTP server call this)."""
        if is_proposal(messages):
            text = self._propose(messages, params)
        else:
            text = self._solve(messages, params)
        finish = "stop"
        limit = params.max_tokens * 4  # the same 4-chars-per-token estimate as the usage
        if len(text) > limit:
            text, finish = text[:limit], "length"
        prompt = sum(estimate_tokens(str(m.get("content", ""))) for m in messages)
        return Completion(text, finish, prompt, estimate_tokens(text))

    def _rng(self, messages: list[dict[str, Any]], params: GenParams) -> random.Random:
        user = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
        return random.Random(_hash([user, params.seed, params.temperature]))

    def _propose(self, messages: list[dict[str, Any]], params: GenParams) -> str:
        examples, scenarios, n, n_action = parse_proposal_request(
            str(messages[-1].get("content", "")))
        return self.writer.write(examples, scenarios, n, self._rng(messages, params), n_action)

    def _solve(self, messages: list[dict[str, Any]], params: GenParams) -> str:
        # messages: system, user, then (assistant, tool)* pairs; we produce the next assistant.
        key = _session_key(messages[:-1], params) if len(messages) > 2 else None
        last_obs = _obs_of(str(messages[-1].get("content", ""))) if len(messages) > 2 else None
        with self._lock:
            gen = self._sessions.pop(key, None) if key else None
        try:
            if gen is not None:
                turn = gen.send(last_obs)
            else:
                gen, turn = self._replay(messages, params)
        except StopIteration as stop:
            return str(stop.value or "")
        except Exception as e:  # a transcript the planner cannot follow must not kill a server
            self.failures += 1
            return f"I cannot continue this episode ({type(e).__name__}); no further action."
        with self._lock:
            self._sessions[_session_key([*messages, {"role": "assistant", "content": turn}],
                                        params)] = gen
            while len(self._sessions) > self.cfg.sessions:
                self._sessions.popitem(last=False)
        return turn

    def _replay(self, messages: list[dict[str, Any]], params: GenParams) -> tuple[PolicyGen,
                                                                                 str]:
        """A fresh planner fed the transcript's observations; raises StopIteration when the
        planner finishes (its final answer is the StopIteration value)."""
        self.replays += 1
        user = next(str(m.get("content", "")) for m in messages if m.get("role") == "user")
        gen = solve_gen(user, self._rng(messages, params), self.policy_cfg)
        turn = next(gen)
        for m in messages[2:]:
            # Observations arrive as `tool` messages, or as `user` messages on the wire.
            if m.get("role") != "assistant":
                turn = gen.send(_obs_of(str(m.get("content", ""))))
        return gen, turn


def looks_like_action(text: str) -> bool:
    return ACTION_OPEN in text or ACTION_CLOSE in text
