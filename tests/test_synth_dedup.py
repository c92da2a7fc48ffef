"""The ROUGE-L filter makes the same decisions as brute-force ROUGE-L (rouge_score)."""

from __future__ import annotations

import random

import pytest

from forge.gym.closed_form import ClosedFormModel
from forge.gym.env import CachedModel
from forge.synth.dedup import RougeIndex, lcs, rouge_l, tokenize
from forge.synth.scenarios import sampled
from forge.teacher.proposer import PATTERNS, TaskWriter


def _instructions(n: int) -> list[str]:
    model = CachedModel(ClosedFormModel())
    scns = [sampled(7_100_000 + i) for i in range(12)]
    w = TaskWriter(model, lambda _: None, mistake_rate=0.0)
    rng = random.Random(5)
    out: list[str] = []
    while len(out) < n:
        p = w.instantiate(rng.choice(PATTERNS), rng.choice(scns), rng)
        if p is not None:
            out.append(p.instruction.split("\n\n")[0])
    # Near-copies too, so that both decisions occur often.
    for i in range(0, n, 3):
        words = out[i].split()
        j = rng.randrange(len(words))
        out.append(" ".join([*words[:j], "kindly", *words[j + 1:]]))
    return out


def test_lcs_and_score() -> None:
    assert lcs(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 3
    assert rouge_l(tokenize("Cell 2 is busy!"), tokenize("cell 2 is busy")) == 1.0
    assert rouge_l([], ["a"]) == 0.0


def test_same_decisions_as_rouge_score() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = _instructions(150)
    idx = RougeIndex(0.7)
    kept: list[str] = []
    decisions = {True: 0, False: 0}
    for t in texts:
        brute = any(scorer.score(k, t)["rougeL"].fmeasure >= 0.7 for k in kept)
        fast = idx.near_duplicate(t) is not None
        assert fast == brute, t
        decisions[fast] += 1
        if not fast:
            kept.append(t)
            idx.add(t)
    assert decisions[True] > 10 and decisions[False] > 50
    # The candidate filter prunes: far fewer exact LCS computations than pairs.
    assert idx.comparisons < 0.5 * len(texts) * len(kept)
