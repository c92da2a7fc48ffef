"""The one codec between chat messages and token ids: SFT, the bench's `hf:` agent and RL rollouts
all go through `ChatCodec`, so a model sees at inference exactly the framing it was trained on.

Framing (ChatML, for every model, whatever chat template its tokenizer ships):

    <|im_start|>{role}\\n{content}<|im_end|>\\n

per message (roles system, user, assistant, tool). A message's ids depend only on that message,
so `encode(messages)` is the concatenation of `encode_message(m)`: a rollout appends the ids of
each new message (or the generated ids of an assistant turn) and never re-tokenises the whole
conversation.

Loss mask: 1 only on an assistant message's own content tokens and its closing `<|im_end|>` (so
the model learns to stop); 0 on role headers, the newline after `<|im_end|>`, and every token of
system, user and tool messages (the tool message is exactly `<ans>...</ans>`, the gym's
observation: the agent must read it, never write it).

Compact rendering (`compact=True`, for small models with short contexts), applied per message:

* system: the solve prompt (forge.teacher.prompts.solve_system_prompt, the protocol plus the full
  42-tool catalogue, thousands of tokens) becomes a short fixed text naming the protocol and the
  tool names (~290 tokens with a corpus tokenizer), or with `short_system=True` one line (~20
  tokens): a model trained from scratch learns the tools from the trajectories, not from a list
  it cannot read yet, and the list was over half of every one-call sample's tokens; any other
  system text is kept;
* tool: the observation JSON inside `<ans>` is re-serialised without spaces, floats rounded to 3
  decimals (the gym already rounds to 3, so no information is lost; integral floats lose their
  ".0"), the `"tool"` echo dropped (the preceding `<action>` names it), a successful
  `{"ok": true, "result": R}` becomes `R`, and a list of >= 2 objects with the same keys becomes a
  table `{"cols": [...], "rows": [[...], ...]}` (every value kept, key names written once);
* user and assistant content are kept as they are (the assistant's text is what is trained and
  what the gym parses).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from forge.gym.tags import ANS_CLOSE, ANS_OPEN, parse_ans

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
PAD = "<|endoftext|>"
TAGS = ("<action>", "</action>", "<ans>", "</ans>", "<answer>", "</answer>")
# Every token the codec relies on being one id, in a stable order (the trained tokenizer gives
# them ids 0..8 in this order).
SPECIAL_TOKENS = (PAD, IM_START, IM_END, *TAGS)
ROLES = ("system", "user", "assistant", "tool")
SOLVE_PREFIX = "You are an LTE network operator agent."


def compact_system_text() -> str:
    """The short system text that replaces the solve prompt: protocol + tool names only."""
    from forge.gym.catalogue import TOOLS

    return (
        "LTE network operator agent. Each turn either call one tool by ending with "
        '<action>{"tool": NAME, "args": {...}}</action> (its result arrives as <ans>...</ans>) '
        "or give the final answer without an action; for questions put it in "
        "<answer>...</answer>. Quote only observed numbers. Tools: "
        + ", ".join(t.name for t in TOOLS) + "."
    )


def _num(x: float) -> float | int:
    if not math.isfinite(x):
        return x
    r = round(x, 3)
    return int(r) if r == int(r) and abs(r) < 1e15 else r


def compact_value(v: Any) -> Any:
    """Floats rounded, lists of same-keyed objects turned into tables; recursively."""
    if isinstance(v, bool) or v is None or isinstance(v, int | str):
        return v
    if isinstance(v, float):
        return _num(v)
    if isinstance(v, dict):
        return {k: compact_value(x) for k, x in v.items()}
    if isinstance(v, list):
        items = [compact_value(x) for x in v]
        if len(items) >= 2 and all(isinstance(x, dict) for x in items):
            keys = list(items[0])
            if keys and all(list(x) == keys for x in items):
                return {"cols": keys, "rows": [[x[k] for k in keys] for x in items]}
        return items
    return v


def compact_observation(obs: Any) -> Any:
    if isinstance(obs, dict) and obs.get("ok") is True and set(obs) <= {"ok", "tool", "result"}:
        return compact_value(obs.get("result"))
    if isinstance(obs, dict):
        return compact_value({k: v for k, v in obs.items() if k != "tool"})
    return compact_value(obs)


SHORT_SYSTEM_TEXT = ("LTE network operator agent: call one tool per turn with <action>, read "
                     "<ans>, answer in <answer>.")


def compact_content(role: str, content: str, short_system: bool = False) -> str:
    """The compact rendering of one message's content (a pure function of the message)."""
    if role == "system" and content.startswith(SOLVE_PREFIX):
        return SHORT_SYSTEM_TEXT if short_system else _compact_system()
    if role == "tool":
        obs, problem = parse_ans(content)
        if problem is None:
            body = json.dumps(compact_observation(obs), separators=(",", ":"),
                              ensure_ascii=False)
            return f"{ANS_OPEN}{body}{ANS_CLOSE}"
    return content


@lru_cache(maxsize=1)
def _compact_system() -> str:
    return compact_system_text()


class ChatCodec:
    """Messages <-> token ids with a per-token loss mask (see the module docstring).

    `tokenizer` is any transformers tokenizer in which `SPECIAL_TOKENS` are single special
    tokens (`forge.train.tokenizer.train_tokenizer` and `forge.train.model.load_smollm2` make
    such tokenizers)."""

    def __init__(self, tokenizer: Any, compact: bool = True, protocol_tags: bool = True,
                 short_system: bool = False) -> None:
        self.tokenizer = tokenizer
        self.compact = compact
        # Only with compact rendering: the solve prompt becomes one line (see the module doc).
        self.short_system = short_system and compact
        # protocol_tags=False: only the ChatML framing must be single tokens; the six tags stay
        # ordinary text (a pretrained model prompted as it is can copy them from its prompt).
        need = SPECIAL_TOKENS if protocol_tags else (IM_START, IM_END)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in need if t != PAD}
        for t, i in ids.items():
            # The round trip catches a token that is missing (-> unk id) or split.
            if i is None or i == tokenizer.unk_token_id or self._ids(t) != [i]:
                raise ValueError(f"tokenizer has no single special token {t!r}")
        self.special_ids = ids
        self.im_start_id = ids[IM_START]
        self.eos_id: int = ids[IM_END]
        self._newline = self._ids("\n")
        self._headers = {r: [self.im_start_id, *self._ids(f"{r}\n")] for r in ROLES}
        self._cache: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def render_content(self, msg: dict[str, Any]) -> str:
        role, content = msg["role"], msg.get("content") or ""
        return compact_content(role, content, self.short_system) if self.compact else content

    def meta(self) -> dict[str, bool]:
        """What a checkpoint records so that `forge.train.model.codec_for` rebuilds this codec."""
        return {"compact": self.compact, "short_system": self.short_system}

    def render(self, messages: Sequence[dict[str, Any]]) -> str:
        """The ChatML text of a conversation (what the ids decode to)."""
        return "".join(f"{IM_START}{m['role']}\n{self.render_content(m)}{IM_END}\n"
                       for m in messages)

    def encode_message(self, msg: dict[str, Any]) -> tuple[list[int], list[int]]:
        """(ids, loss mask) of one message, framing included."""
        role = msg["role"]
        content = self.render_content(msg)
        # System prompts repeat in every sample: cache them (and nothing else, to bound memory).
        key = (role, content)
        if role == "system" and key in self._cache:
            ids, mask = self._cache[key]
            return list(ids), list(mask)
        ids, mask = self._frame(role, self._ids(content))
        if role == "system":
            self._cache[key] = (ids, mask)
        return list(ids), mask

    def _frame(self, role: str, body: list[int]) -> tuple[list[int], list[int]]:
        head = self._headers.get(role)
        if head is None:
            raise ValueError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        train = 1 if role == "assistant" else 0
        return ([*head, *body, self.eos_id, *self._newline],
                [0] * len(head) + [train] * (len(body) + 1) + [0] * len(self._newline))

    def encode_many(self, conversations: Sequence[Sequence[dict[str, Any]]],
                    chunk: int = 4096) -> list[tuple[list[int], list[int]]]:
        """`encode` of many conversations, the message bodies tokenised in batches by the fast
        tokenizer (one Python call per message was most of a 50k-sample SFT's setup time).
        Same ids and masks as `encode`, conversation by conversation."""
        flat = [(k, m["role"], self.render_content(m)) for k, conv in enumerate(conversations)
                for m in conv]
        bodies: list[list[int]] = []
        for a in range(0, len(flat), chunk):
            texts = [c for _, _, c in flat[a:a + chunk]]
            bodies += [list(x) for x in self.tokenizer(texts, add_special_tokens=False)[
                "input_ids"]]
        out: list[tuple[list[int], list[int]]] = [([], []) for _ in conversations]
        for (k, role, _), body in zip(flat, bodies, strict=True):
            i, m = self._frame(role, body)
            out[k][0].extend(i)
            out[k][1].extend(m)
        return out

    def encode(self, messages: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        mask: list[int] = []
        for m in messages:
            i, k = self.encode_message(m)
            ids += i
            mask += k
        return ids, mask

    def assistant_prefix(self) -> list[int]:
        """The ids that open an assistant turn: append them to the context, then generate."""
        return list(self._headers["assistant"])

    def end_of_turn(self) -> list[int]:
        """The ids that follow a generated `<|im_end|>` before the next message's header (so a
        rollout's ids equal `encode` of the finished conversation)."""
        return list(self._newline)

    def decode_turn(self, ids: Sequence[int]) -> str:
        """The assistant content generated after `assistant_prefix()`: up to the first
        `<|im_end|>` (exclusive); the tags stay in the text."""
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        text: str = self.tokenizer.decode(ids, skip_special_tokens=False,
                                          clean_up_tokenization_spaces=False)
        for t in (IM_START, PAD):
            text = text.replace(t, "")
        return text


__all__ = ["IM_END", "IM_START", "PAD", "SPECIAL_TOKENS", "TAGS", "ChatCodec",
           "compact_content", "compact_observation", "compact_system_text"]
