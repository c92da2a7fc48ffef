"""Near-duplicate instructions: forge's MinHash LSH vs datasketch's MinHashLSH vs the original
Self-Instruct ROUGE-L filter, on the same instructions.

    python benchmarks/bench_neardup.py --db build/bench/pool200k.duckdb --n 50000

* Time: forge and datasketch run on all N instructions (shingling included). ROUGE-L is
  quadratic (Self-Instruct compares every new instruction with every kept one), so it runs on
  the labelled sample only and its full-N time is extrapolated (pairs x measured time per pair).
* Agreement: a labelled sample of instructions made of whole families (a base instruction of
  the pool with all its variants: light edits, paraphrases, re-solves, copies), so that it holds
  many true near-duplicates; identical texts are kept once; every pair in it is labelled by the
  exact Jaccard similarity of the word 3-gram sets (>= threshold = duplicate). Each method's
  verdict on each pair: forge = a verified pair (what its greedy dedup acts on); datasketch =
  returned by an LSH query (and, second row, also MinHash.jaccard >= threshold); ROUGE-L =
  F-measure >= threshold (Self-Instruct drops an instruction when it is > 0.7 to a kept one).
The pool is the benchmark fixture of make_pool.py (scripted templates + controlled variants).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_instructions(db: str, n: int, seed: int) -> tuple[list[str], list[str]]:
    con = duckdb.connect(db, read_only=True)
    rows = con.execute("""
        SELECT t.instruction, split_part(split_part(j.traj_id, '/', 1), '~', 1) AS family_key
        FROM trajectories j JOIN tasks t USING (task_id)
        WHERE j.status = 'verified'
        ORDER BY hash(j.traj_id || ?::VARCHAR), j.traj_id LIMIT ?""", [seed, n]).fetchall()
    con.close()
    return [r[0] for r in rows], [r[1].split("#")[0] for r in rows]


def run_forge(texts: list[str], threshold: float, num_perm: int
              ) -> tuple[float, set[tuple[str, str]]]:
    """As the curation stage does it: distinct texts once, then MinHash LSH + verification.
    Returns the verified pairs as (text, text)."""
    from forge.curate.minhash import near_duplicates

    t = time.time()
    uniq = list(dict.fromkeys(texts))
    res = near_duplicates(uniq, threshold, num_perm)
    pairs = {(uniq[i], uniq[j]) for i, j in zip(res.i.tolist(), res.j.tolist(), strict=True)}
    return time.time() - t, pairs


def shingle_lists(texts: list[str]) -> list[list[bytes]]:
    from forge.curate.minhash import shingle_hashes

    h, off = shingle_hashes(texts)
    return [[int(x).to_bytes(8, "little") for x in h[off[i]:off[i + 1]]]
            for i in range(len(texts))]


def run_datasketch(texts: list[str], threshold: float, num_perm: int
                   ) -> tuple[float, set[tuple[int, int]], float, set[tuple[int, int]]]:
    """(seconds, LSH candidate pairs, extra seconds to verify, verified pairs)."""
    from datasketch import MinHash, MinHashLSH

    t = time.time()
    sh = shingle_lists(texts)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    mhs = MinHash.bulk(sh, num_perm=num_perm)
    with lsh.insertion_session() as sess:
        for i, m in enumerate(mhs):
            sess.insert(i, m)
    pairs: set[tuple[int, int]] = set()
    for i, m in enumerate(mhs):
        for j in lsh.query(m):
            if j != i:
                pairs.add((min(i, j), max(i, j)))
    t_lsh = time.time() - t
    t = time.time()
    verified = {(i, j) for i, j in pairs if mhs[i].jaccard(mhs[j]) >= threshold}
    return t_lsh, pairs, time.time() - t, verified


def labelled_sample(keys: list[str], n_families: int, seed: int) -> list[int]:
    by: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by.setdefault(k, []).append(i)
    fams = sorted(k for k, v in by.items() if len(v) > 1)
    rng = random.Random(seed)
    chosen = rng.sample(fams, min(n_families, len(fams)))
    singles = sorted(k for k, v in by.items() if len(v) == 1)
    chosen += rng.sample(singles, min(n_families, len(singles)))
    return sorted(i for k in chosen for i in by[k])


def prf(pred: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    tp = len(pred & truth)
    return {"precision": round(tp / len(pred), 4) if pred else 1.0,
            "recall": round(tp / len(truth), 4) if truth else 1.0,
            "predicted_pairs": len(pred)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default="build/bench/pool200k.duckdb")
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--num-perm", type=int, default=64)
    ap.add_argument("--families", type=int, default=300,
                    help="families (base + variants) in the labelled sample, plus as many "
                         "singletons")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="build/bench/neardup.json")
    a = ap.parse_args(argv)
    from rouge_score import rouge_scorer

    from forge.curate.minhash import exact_jaccard, shingle_sets

    texts, keys = load_instructions(a.db, a.n, a.seed)
    print(f"{len(texts):,} instructions ({len(set(texts)):,} distinct)")
    t_forge, forge_pairs = run_forge(texts, a.threshold, a.num_perm)
    print(f"forge MinHash LSH ({a.num_perm} perm): {t_forge:.1f} s")
    t_ds, ds_pairs, t_ver, ds_verified = run_datasketch(texts, a.threshold, 128)
    print(f"datasketch MinHashLSH (128 perm): {t_ds:.1f} s")

    # Distinct texts only: identical instructions are trivially duplicates for every method.
    first: dict[str, int] = {}
    for i in labelled_sample(keys, a.families, a.seed):
        first.setdefault(texts[i], i)
    sample = sorted(first.values())
    sets = shingle_sets([texts[i] for i in sample])
    pairs = list(itertools.combinations(range(len(sample)), 2))
    truth = {p for p in pairs if exact_jaccard(sets[p[0]], sets[p[1]]) >= a.threshold}
    print(f"labelled sample: {len(sample)} instructions, {len(pairs):,} pairs, "
          f"{len(truth):,} near-duplicate pairs by exact Jaccard >= {a.threshold}")
    pos = {g: k for k, g in enumerate(sample)}
    pos_text = {texts[g]: k for k, g in enumerate(sample)}
    forge_pred = {(min(pos_text[a], pos_text[b]), max(pos_text[a], pos_text[b]))
                  for a, b in forge_pairs if a in pos_text and b in pos_text}
    ds_pred = {(pos[i], pos[j]) for i, j in ds_pairs if i in pos and j in pos}
    ds_pred = {(min(p), max(p)) for p in ds_pred}
    ds_ver = {(min(pos[i], pos[j]), max(pos[i], pos[j])) for i, j in ds_verified
              if i in pos and j in pos}

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    toks = [scorer._tokenizer.tokenize(texts[i]) for i in sample]
    from rouge_score.rouge_scorer import _score_lcs

    t = time.time()
    rouge_pred = {p for p in pairs
                  if _score_lcs(toks[p[0]], toks[p[1]]).fmeasure >= a.threshold}
    t_pair = (time.time() - t) / len(pairs)
    n = len(texts)
    t_rouge_full = t_pair * n * (n - 1) / 2
    rows: list[dict[str, Any]] = [
        {"method": f"forge MinHash LSH ({a.num_perm} perm, exact-Jaccard verified)",
         "seconds_on_n": round(t_forge, 1), **prf(forge_pred, truth)},
        {"method": "datasketch MinHashLSH (128 perm), LSH candidates as returned",
         "seconds_on_n": round(t_ds, 1), **prf(ds_pred, truth)},
        {"method": "datasketch MinHashLSH (128 perm) + MinHash.jaccard >= threshold",
         "seconds_on_n": round(t_ds + t_ver, 1), **prf(ds_ver, truth)},
        {"method": "Self-Instruct ROUGE-L >= 0.7 (rouge_score)",
         "seconds_on_n": f"~{t_rouge_full / 3600:.1f} h (extrapolated: {t_pair * 1e6:.0f} us "
                         f"x {n * (n - 1) // 2:,} pairs)", **prf(rouge_pred, truth)},
    ]
    print(f"\n| method | time on {n:,} | precision | recall | predicted pairs |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seconds_on_n']} | {r['precision']} | {r['recall']} | "
              f"{r['predicted_pairs']} |")
    out = {"n": n, "threshold": a.threshold, "sample": len(sample), "pairs": len(pairs),
           "true_pairs": len(truth), "rows": rows, "command": " ".join(sys.argv)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
