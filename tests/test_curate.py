"""Curation (issue 5): stages, balance, splits, idempotence, atomicity, CLI errors.

Pools are real scripted trajectories (closed-form gym physics, no trained model needed) plus
controlled duplicates from forge.curate.fixtures, inserted into in-memory DuckDB stores.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from forge import db as forge_db
from forge.curate import CurateConfig, CurateOptionError, QuotaShortError, parse_count, run
from forge.curate.__main__ import main
from forge.curate.config import parse_ratio, parse_shares
from forge.curate.fixtures import (
    copy_as,
    insert_pool,
    light_edit,
    paraphrase,
    pool_rows,
    with_error_recovery,
)
from forge.curate.minhash import exact_jaccard, near_duplicates, shingle_sets
from forge.curate.splits import assign_splits, split_groups
from forge.gym.closed_form import ClosedFormModel
from forge.gym.scripted import generate

# Loose caps: a 150-trajectory pool has few tools/families, the defaults are for big pools.
LOOSE: dict[str, Any] = {"max_tool_share": 0.6, "max_family_share": 0.6, "quiet": True}


def one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


@pytest.fixture(scope="module")
def pool_spec() -> dict[str, object]:
    """Rows of a small pool, and which rows are which controlled variant."""
    m = ClosedFormModel()
    base = generate(150, m, seed=11)
    rng = random.Random(0)
    rows: list[dict[str, dict[str, object]]] = []
    kinds: dict[str, str] = {}
    for i, tr in enumerate(base):
        if i % 6 == 0:
            tr = with_error_recovery(tr, m)
        rows.append(pool_rows(tr))
        kinds[tr.id] = "base"
        if i % 5 == 0:
            c = copy_as(tr, f"{tr.id}#copy")
            rows.append(pool_rows(c, attempt=1))
            kinds[c.id] = "exact"
        if i % 4 == 1:
            e = light_edit(tr, f"{tr.task.id}~edit/x", rng)
            rows.append(pool_rows(e))
            kinds[e.id] = "light"
        if i % 7 == 2:
            r = copy_as(tr, f"{tr.id}#rej")
            rows.append(pool_rows(r, status="rejected", reject_stage="outcome", attempt=2))
            kinds[r.id] = "rejected"
        if i % 9 == 3:
            p = paraphrase(tr, f"{tr.task.id}~para/x")
            if p is not None:
                rows.append(pool_rows(p))
                kinds[p.id] = "paraphrase"
    return {"rows": rows, "kinds": kinds, "base": base}


def make_store(spec: dict[str, object]) -> duckdb.DuckDBPyConnection:
    con = forge_db.connect(":memory:")
    insert_pool(con, spec["rows"])  # type: ignore[arg-type]
    return con


# -- options ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,n", [("50k", 50_000), ("50000", 50_000), ("1.2M", 1_200_000),
                                    ("2_000", 2_000), (7, 7)])
def test_parse_count(text: str | int, n: int) -> None:
    assert parse_count(text) == n


@pytest.mark.parametrize("bad", ["fifty", "1.5", "-3", "0", "10x", ""])
def test_bad_target_says_what_to_write(bad: str) -> None:
    with pytest.raises(CurateOptionError, match="target"):
        parse_count(bad)


def test_ratio_and_shares() -> None:
    assert parse_ratio("1:3") == (1.0, 3.0)
    assert parse_shares("30/45/25", ("L1", "L2", "L3"), "--difficulty") == pytest.approx(
        (0.3, 0.45, 0.25))
    for bad in ("1-1", "a:b", "0:0", "1:1:1"):
        with pytest.raises(CurateOptionError, match="qa-ratio"):
            parse_ratio(bad)
    with pytest.raises(CurateOptionError, match="difficulty"):
        CurateConfig(target=10, difficulty="30/70")
    with pytest.raises(CurateOptionError, match="fill"):
        CurateConfig(target=10, fill="maybe")


# -- near-dup --------------------------------------------------------------------------------------
def test_minhash_matches_exact_jaccard() -> None:
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(400)]
    texts = []
    for _ in range(150):
        words = rng.sample(vocab, 30)
        texts.append(" ".join(words))
        # a near copy (one word changed: Jaccard ~0.8) and a far one (half the words changed)
        near = list(words)
        near[rng.randrange(30)] = rng.choice(vocab)
        texts.append(" ".join(near))
    res = near_duplicates(texts, threshold=0.7, num_perm=64)
    found = {(int(a), int(b)) for a, b in zip(res.i, res.j, strict=True)}
    sets = shingle_sets(texts)
    truth = {(a, b) for a in range(len(texts)) for b in range(a + 1, len(texts))
             if exact_jaccard(sets[a], sets[b]) >= 0.7}
    assert len(truth) > 100
    recall = len(found & truth) / len(truth)
    fp = [p for p in found - truth if exact_jaccard(sets[p[0]], sets[p[1]]) < 0.5]
    assert recall >= 0.9, recall
    assert not fp  # verified on signatures: nothing far below the threshold gets through


# -- the pipeline ----------------------------------------------------------------------------------
def test_curate_end_to_end(pool_spec: dict[str, object], tmp_path: Path) -> None:
    con = make_store(pool_spec)
    kinds: dict[str, str] = pool_spec["kinds"]  # type: ignore[assignment]
    cfg = CurateConfig(target=80, out=str(tmp_path / "set"), **LOOSE)
    s = run(cfg, con=con, argv=["--target", "80"])
    assert s.n_members == 80 and not s.up_to_date

    members = dict(con.execute("SELECT traj_id, split FROM curated_members "
                               "WHERE set_name = 'curated-80'").fetchall())
    drops = {t: (st, r, k) for t, st, r, k in con.execute(
        "SELECT traj_id, stage, reason, kept_traj_id FROM curation_drops "
        "WHERE set_name = 'curated-80'").fetchall()}
    # Every pool row is accounted for exactly once.
    assert set(members).isdisjoint(drops)
    assert set(members) | set(drops) == set(kinds)
    para_dropped = []
    for tid, kind in kinds.items():
        if kind == "rejected":
            assert drops[tid][:2] == ("verified", "rejected_outcome")
        elif kind == "exact":
            assert drops[tid][:2] == ("exact", "exact_duplicate")
            assert drops[tid][2] == tid.split("#")[0]     # lost to its original
        elif kind == "light":
            assert drops[tid][0] in ("near_instruction", "near_trajectory")
        elif kind == "paraphrase":   # same solution, reworded: a whole-trajectory near-dup
            para_dropped.append(drops.get(tid, ("kept",))[0] in ("near_trajectory", "semantic"))
    assert len(para_dropped) >= 5 and all(para_dropped)
    # Balance: the quotas that the pool can meet are met; shortfalls are reported, not hidden.
    bal = {(d, b): (req, ach, short, filled) for d, b, req, ach, short, filled in con.execute(
        "SELECT dimension, bucket, requested, achieved, short, filled_from FROM curation_balance "
        "WHERE set_name = 'curated-80'").fetchall()}
    assert sum(v[1] for (d, _), v in bal.items() if d == "kind") == 80
    assert sum(v[1] for (d, _), v in bal.items() if d == "difficulty") == 80
    assert bal["difficulty", "L1"][1] <= bal["difficulty", "L1"][0]
    assert bal["error_recovery", "true"][1] >= 8
    qa = bal["kind", "qa"]
    if qa[1] < qa[0]:   # scripted qa tasks are all L1, so the L1 quota limits them
        assert qa[2] == qa[0] - qa[1] and qa[3] == "action"
        assert any("kind qa" in m and "filled" in m for m in s.messages)
    # No scenario seed in two splits.
    seeds = con.execute("SELECT seed, count(DISTINCT split) FROM curated_members "
                        "WHERE set_name = 'curated-80' GROUP BY seed HAVING count(DISTINCT "
                        "split) > 1").fetchall()
    assert seeds == []
    # Views answer.
    assert one(con, "SELECT sum(n) FROM curation_drop_counts WHERE set_name = "
                       "'curated-80'") == len(drops)
    assert one(con, "SELECT count(*) FROM curated_tool_histogram") > 0
    assert one(con, "SELECT count(*) FROM curated_samples") == 80
    # Export + card.
    card = (tmp_path / "set" / "README.md").read_text()
    for needle in ("python -m forge.curate --target 80", "Jaccard >= 0.7", "cosine >= 0.9",
                   "closed-form-physics-v1", "scripted-v1", "| train |"):
        assert needle in card
    rl = one(con, "SELECT count(*), count(DISTINCT task_id) FROM curated_rl_prompts "
                  "WHERE set_name = 'curated-80'")
    assert rl[0] == rl[1] > 0


def test_rerun_is_idempotent_and_cached(pool_spec: dict[str, object], tmp_path: Path) -> None:
    con = make_store(pool_spec)
    cfg = CurateConfig(target=60, out=str(tmp_path / "a"), **LOOSE)
    first = run(cfg, con=con, argv=[])
    order1 = con.execute("SELECT traj_id, split, position FROM curated_members "
                         "ORDER BY ALL").fetchall()
    again = run(cfg, con=con, argv=[])
    assert again.up_to_date and again.set_hash == first.set_hash
    # A balance-only change reuses every dedup stage from the cache.
    cfg2 = CurateConfig(target=60, out=str(tmp_path / "a"), qa_ratio="1:2", **LOOSE)
    third = run(cfg2, con=con, argv=[])
    cached = {r["stage"]: r.get("cached") for r in third.stages}
    assert cached["near_instruction"] and cached["near_trajectory"] and cached["semantic"]
    n_emb = one(con, "SELECT count(*) FROM curation_embeddings")
    # Same options again from a fresh store with the same pool: the same set, same order.
    con2 = make_store(pool_spec)
    run(CurateConfig(target=60, out=str(tmp_path / "b"), **LOOSE), con=con2, argv=[])
    order2 = con2.execute("SELECT traj_id, split, position FROM curated_members "
                          "ORDER BY ALL").fetchall()
    assert order1 == order2
    assert one(con, "SELECT count(*) FROM curation_embeddings") == n_emb


def test_interrupted_run_keeps_previous_set(pool_spec: dict[str, object], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    con = make_store(pool_spec)
    out = tmp_path / "set"
    run(CurateConfig(target=60, name="s", out=str(out), **LOOSE), con=con, argv=[])
    before = con.execute("SELECT traj_id, split FROM curated_members ORDER BY ALL").fetchall()
    card = (out / "README.md").read_text()

    import forge.curate.pipeline as pipeline

    def boom(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_swap_dir", boom)
    with pytest.raises(KeyboardInterrupt):
        run(CurateConfig(target=50, name="s", out=str(out), **LOOSE), con=con, argv=[])
    monkeypatch.undo()
    monkeypatch.setattr(pipeline, "write_export", boom)     # interrupted while exporting
    with pytest.raises(KeyboardInterrupt):
        run(CurateConfig(target=40, name="s", out=str(out), **LOOSE), con=con, argv=[])
    monkeypatch.undo()
    after = con.execute("SELECT traj_id, split FROM curated_members WHERE set_name = 's' "
                        "ORDER BY ALL").fetchall()
    assert (out / "README.md").read_text() == card
    assert after == before
    assert one(con, "SELECT count(*) FROM curated_members WHERE set_name LIKE '%staging'") == 0
    assert [p.name for p in out.parent.iterdir()] == ["set"]     # no temporary directory left


def test_fill_stop_names_the_short_quota(pool_spec: dict[str, object], tmp_path: Path) -> None:
    con = make_store(pool_spec)
    # Scripted qa tasks are all L1: a 1:1 ratio with 30 % L1 cannot be met.
    cfg = CurateConfig(target=80, fill="stop", out=str(tmp_path / "x"), **LOOSE)
    with pytest.raises(QuotaShortError, match=r"kind qa: requested 40.*short by \d+"):
        run(cfg, con=con, argv=[])
    assert one(con, "SELECT count(*) FROM curated_members") == 0
    n_verified = one(con, "SELECT count(*) FROM trajectories WHERE status = 'verified'"
                             )
    with pytest.raises(CurateOptionError, match="lower --target"):     # more than the pool
        run(CurateConfig(target=n_verified + 1, out=str(tmp_path / "y"), **LOOSE), con=con)
    # Fewer than the pool, more than survives dedup and the quotas: stop, or accept by flag.
    with pytest.raises(QuotaShortError, match=r"short by \d+.*--allow-short"):
        run(CurateConfig(target=n_verified, out=str(tmp_path / "y"), **LOOSE), con=con)
    s = run(CurateConfig(target=n_verified, allow_short=True, out=str(tmp_path / "y"),
                         **LOOSE), con=con)
    assert 0 < s.n_members < n_verified
    assert any("--allow-short" in m for m in s.messages)


def test_cli_refuses_before_any_write(pool_spec: dict[str, object], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "forge.duckdb"
    con = forge_db.connect(path)
    insert_pool(con, pool_spec["rows"])  # type: ignore[arg-type]
    con.close()
    stamp = path.read_bytes()
    assert main(["--db", str(path), "--target", "10M", "--quiet"]) == 2
    assert "lower --target" in capsys.readouterr().err
    assert main(["--db", str(path), "--target", "50", "--qa-ratio", "one:one"]) == 2
    assert "--qa-ratio" in capsys.readouterr().err
    assert path.read_bytes() == stamp


def test_semantic_stage_drops_paraphrases_only() -> None:
    from forge.curate.pool import load_pool
    from forge.curate.stages import semantic_stage

    m = ClosedFormModel()
    tr = generate(1, m, seed=5, kinds=("qa_busiest_cell",))[0]
    other = generate(1, m, seed=6, kinds=("qa_busiest_cell",))[0]
    para = paraphrase(tr, f"{tr.task.id}~p/x")
    assert para is not None
    renumbered = light_edit(tr, f"{tr.task.id}~u/x", random.Random(1))
    renumbered = renumbered.model_copy(update={"task": renumbered.task.model_copy(update={
        "instruction": "Which UE has the lowest downlink throughput? Give the UE index."})})
    con = forge_db.connect(":memory:")
    insert_pool(con, [pool_rows(t) for t in (tr, para, renumbered, other)])
    pool = load_pool(con)
    res = semantic_stage(pool, np.arange(len(pool)), CurateConfig(target=1), con)
    dropped = {pool.traj_id[r]: (why, pool.traj_id[k]) for r, why, k in
               zip(res.rows, res.reason, res.kept, strict=True) if why}
    assert dropped == {para.id: ("semantic_duplicate", tr.id)}   # the other scenario is safe
    assert res.info["embedded_rows"] == 3                        # the singleton is not encoded
    # Global scope (SemDeDup proper, k-means groups): the same question about another network
    # is a duplicate too.
    glob = semantic_stage(pool, np.arange(len(pool)), CurateConfig(
        target=1, dedup_scope="global", semantic_cluster_size=10), con)
    assert {pool.traj_id[r] for r, why in zip(glob.rows, glob.reason, strict=True) if why} == {
        para.id, other.id}


def test_splits_keep_groups_together() -> None:
    seed = np.array([1, 1, 2, 3, 4, 5, 6, 7])
    cluster = np.array([10, -1, 10, 11, -1, -1, 12, 12])  # rows 0,2 and 6,7 are near-dups
    groups = split_groups(seed, [cluster])
    assert groups[0] == groups[1] == groups[2] and groups[6] == groups[7]
    assert len(set(groups.tolist())) == 5
    split = assign_splits(groups, np.ones(8, bool), (0.5, 0.25, 0.25), seed=0)
    for g in set(groups.tolist()):
        assert len(set(split[groups == g].tolist())) == 1
    assert set(split.tolist()) == {0, 1, 2}


def test_export_formats(pool_spec: dict[str, object], tmp_path: Path) -> None:
    from datasets import load_from_disk

    con = make_store(pool_spec)
    run(CurateConfig(target=40, name="t", format="tools", out=str(tmp_path / "t"), **LOOSE),
        con=con, argv=[])
    dd = load_from_disk(str(tmp_path / "t" / "dataset"))
    row = dd["train"][0]
    tools = json.loads(row["tools"])
    assert {t["function"]["name"] for t in tools} >= set(row["tools_called"])
    calls = [m for m in row["messages"] if m["role"] == "assistant" and m["tool_calls"]]
    assert len(calls) == row["n_actions"]
    first = calls[0]["tool_calls"][0]["function"]
    assert first["name"] == row["tools_called"][0] and isinstance(first["arguments"], dict)
    obs = [m for m in row["messages"] if m["role"] == "tool"]
    assert obs[0]["name"] == first["name"] and "<ans>" not in obs[0]["content"]
    json.loads(obs[0]["content"])
    assert all("<action>" not in (m["content"] or "") for m in row["messages"])
    assert (tmp_path / "t" / "parquet" / "train.parquet").exists()
    rl = load_from_disk(str(tmp_path / "t" / "rl_prompts"))
    assert len(rl) == one(con, "SELECT count(*) FROM curated_rl_prompts WHERE set_name = 't'")
    p = rl[0]
    assert [m["role"] for m in p["prompt"]] == ["system", "user"]
    assert p["prompt"][1]["content"] == p["instruction"]
    assert json.loads(p["task"])["id"] == p["task_id"] and "goal" in json.loads(p["task"])
    assert (tmp_path / "t" / "parquet" / "rl_prompts.parquet").exists()
    # Half of the action samples (by trajectory id) show the goal JSON, the rest the ticket only;
    # the card carries the data statistics.
    from forge.curate.export import shows_goal_json
    from forge.teacher.prompts import CRITERION_HEAD

    rows = [r for s in dd.values() for r in s if r["kind"] == "action"]
    assert rows and {shows_goal_json(r["traj_id"], 0.5) for r in rows} == {True, False}
    for r in rows:
        user = next(m["content"] for m in r["messages"] if m["role"] == "user")
        stored = json.loads(one(con, "SELECT json_extract(trajectory, '$.messages[1].content')"
                                f"::VARCHAR FROM trajectories WHERE traj_id = '{r['traj_id']}'"))
        if shows_goal_json(r["traj_id"], 0.5):
            assert user == stored
        else:
            assert CRITERION_HEAD not in user and stored.startswith(user)
    card = (tmp_path / "t" / "README.md").read_text()
    assert "## Data statistics" in card and "redundant calls" in card
    info = json.loads((tmp_path / "t" / "curation.json").read_text())
    assert info["data_stats"]["samples"] == sum(len(s) for s in dd.values())


def test_joint_plan_meets_both_quotas_where_one_pass_would_not() -> None:
    """Questions are rare at L3 and actions plentiful there. A single pass fills L1 and L2 with
    whatever kind comes first and leaves the qa quota short; the (kind, difficulty) plan meets
    both quotas without any fill."""
    from types import SimpleNamespace

    import numpy as np

    from forge.curate.balance import balance, joint_plan

    avail = {("qa", "L1"): 60, ("qa", "L2"): 60, ("qa", "L3"): 5,
             ("action", "L1"): 60, ("action", "L2"): 60, ("action", "L3"): 90}
    kind_q, diff_q = {"qa": 100, "action": 100}, {"L1": 60, "L2": 90, "L3": 50}
    plan = joint_plan(avail, kind_q, diff_q)
    assert all(0 <= plan[c] <= avail[c] for c in avail)
    for axis, quota in ((0, kind_q), (1, diff_q)):
        for b, q in quota.items():
            assert q <= sum(v for c, v in plan.items() if c[axis] == b) <= q + 3
    cells = [c for c, n in avail.items() for _ in range(n)]
    n = len(cells)
    pool = SimpleNamespace(
        kind=[k for k, _ in cells], difficulty=[d for _, d in cells],
        primary_tool=[f"t{i % 9}" for i in range(n)], family=[f"f{i % 5}" for i in range(n)],
        error_recovery=np.zeros(n, dtype=bool), traj_id=[f"tr{i}" for i in range(n)])
    cfg = CurateConfig(target=200, fill="stop", qa_ratio="1:1", difficulty="30/45/25",
                       error_recovery_share=0.0, max_tool_share=1.0, max_family_share=1.0)
    res = balance(pool, np.arange(n), cfg)   # type: ignore[arg-type]
    got = Counter(cells[i] for i in res.selected)
    assert len(res.selected) == 200 and not res.messages
    assert sum(v for (k, _), v in got.items() if k == "qa") == 100
    assert {d: sum(v for (_, dd), v in got.items() if dd == d) for d in diff_q} == diff_q


def test_progress_in_a_log_file_is_a_line_every_tenth() -> None:
    """Where stderr is not a terminal (a log file, CI), a live bar shows nothing: the long
    stages print plain progress lines instead."""
    import io

    from rich.console import Console

    from forge.curate.pipeline import _Display

    d = _Display(quiet=False)
    buf = io.StringIO()
    d.console = Console(file=buf, force_terminal=False, width=200)
    advance, stop = d.bar(1000, "embedding")
    for _ in range(40):
        advance(25)
    stop()
    lines = [x for x in buf.getvalue().splitlines() if x.strip()]
    assert len(lines) == 10, lines
    assert lines[0].strip().startswith("embedding: 100 of 1,000")
    assert lines[-1].strip().startswith("embedding: 1,000 of 1,000")
