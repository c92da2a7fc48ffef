"""Curation speed: a 200k-trajectory pool to a 50k set, every stage, semantic dedup included;
and the semantic-dedup encoder trade-off (speed vs agreement with the reference model).

    python benchmarks/make_pool.py --rows 200000 --db build/bench/pool200k.duckdb   # once
    python benchmarks/bench_curate.py --pool build/bench/pool200k.duckdb --target 50k

The pool is copied first (the benchmark writes curation tables and embeddings into the copy).
Three runs on the copy: cold (nothing cached but the ONNX export), rerun (same options: must be
a no-op), and a balance-only change (dedup stages and embeddings come from the caches).

Encoder trade-off, on instructions of the pool (whole families: a base and its variants, so
there are paraphrase pairs): texts/s of each backend and, for every pair of the sample, the
duplicate verdict (cosine >= threshold) compared with the reference (sentence-transformers,
torch, fp32, 128 tokens): precision / recall of the verdicts.

The pool is a fixture (benchmarks/make_pool.py), not training data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_pipeline(pool: str, work: str, target: str, out: str) -> dict[str, Any]:
    from forge.curate import CurateConfig, parse_count, run

    shutil.copyfile(pool, work)
    runs = {}
    plan: list[tuple[str, dict[str, Any]]] = [("cold", {}), ("rerun", {}),
                                              ("balance_change", {"qa_ratio": "1:2"})]
    for label, extra in plan:
        cfg = CurateConfig(target=parse_count(target), db=work, out=out, **extra)
        t = time.time()
        s = run(cfg, argv=["--db", work, "--target", target, "--out", out]
                + (["--qa-ratio", "1:2"] if extra else []))
        runs[label] = {"seconds": round(time.time() - t, 1), "members": s.n_members,
                       "up_to_date": s.up_to_date, "splits": s.splits,
                       "stages": [{k: (round(v, 1) if isinstance(v, float) else v)
                                   for k, v in r.items()} for r in s.stages],
                       "messages": s.messages}
        print(f"{label}: {runs[label]['seconds']} s, {s.n_members:,} members")
    return runs


def sample_instructions(pool: str, n_families: int, seed: int) -> list[str]:
    import duckdb

    con = duckdb.connect(pool, read_only=True)
    rows = con.execute("""
        SELECT DISTINCT t.instruction,
               split_part(split_part(split_part(j.traj_id, '/', 1), '~', 1), '#', 1) AS fam
        FROM trajectories j JOIN tasks t USING (task_id)""").fetchall()
    con.close()
    by: dict[str, list[str]] = {}
    for text, fam in rows:
        by.setdefault(fam, []).append(text)
    fams = sorted(k for k, v in by.items() if len(v) > 1)
    rng = random.Random(seed)
    return sorted({t for f in rng.sample(fams, min(n_families, len(fams))) for t in by[f]})


def bench_encoders(texts: list[str], threshold: float) -> list[dict[str, Any]]:
    import duckdb

    from forge import db as forge_db
    from forge.curate.embed import OnnxEncoder, StaticEncoder, TransformerEncoder

    con = forge_db.connect(":memory:")
    assert isinstance(con, duckdb.DuckDBPyConnection)
    ref_enc = TransformerEncoder(max_seq_length=128)
    variants: list[tuple[str, Any]] = [
        ("torch fp32, 128 tokens (reference)", ref_enc),
        ("torch fp32, 64 tokens", TransformerEncoder(max_seq_length=64)),
        ("onnx fp32, 64 tokens (default)", OnnxEncoder(TransformerEncoder(max_seq_length=64))),
        ("onnx fp32, 32 tokens", OnnxEncoder(TransformerEncoder(max_seq_length=32))),
        ("static distilled, 64 tokens", StaticEncoder(TransformerEncoder(max_seq_length=64),
                                                      con)),
    ]
    iu = np.triu_indices(len(texts), 1)
    rows = []
    ref = None
    for label, enc in variants:
        # Not timed: loading the model / the ONNX export, and for the static encoder the
        # one-time distillation of the tokens these texts use (cached in DuckDB afterwards).
        enc.encode(texts if isinstance(enc, StaticEncoder) else texts[:8])
        t = time.time()
        e = enc.encode(texts)
        dt = time.time() - t
        verdict = (e @ e.T)[iu] >= threshold
        if ref is None:
            ref = verdict
        tp = int((verdict & ref).sum())
        rows.append({"encoder": label, "texts_per_s": round(len(texts) / dt, 1),
                     "dup_pairs": int(verdict.sum()),
                     "precision_vs_ref": round(tp / max(int(verdict.sum()), 1), 4),
                     "recall_vs_ref": round(tp / max(int(ref.sum()), 1), 4)})
        print(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default="build/bench/pool200k.duckdb")
    ap.add_argument("--work", default="build/bench/curate_work.duckdb")
    ap.add_argument("--target", default="50k")
    ap.add_argument("--out-dir", default="build/bench/curated")
    ap.add_argument("--families", type=int, default=400)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--skip-encoders", action="store_true")
    ap.add_argument("--out", default="build/bench/curate.json")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict[str, Any] = {"command": " ".join(sys.argv), "pool": a.pool,
                              "cpus": os.cpu_count()}
    if not a.skip_pipeline:
        result["pipeline"] = bench_pipeline(a.pool, a.work, a.target, a.out_dir)
    if not a.skip_encoders:
        texts = sample_instructions(a.pool, a.families, 0)
        print(f"encoder sample: {len(texts)} distinct instructions, "
              f"{len(texts) * (len(texts) - 1) // 2:,} pairs")
        result["encoders"] = {"n_texts": len(texts), "threshold": a.threshold,
                              "rows": bench_encoders(texts, a.threshold)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
