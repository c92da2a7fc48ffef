"""forge bench: metrics, the shipped task set, every built-in agent on a few tasks, leakage,
determinism, a bad endpoint and agent garbage, the hf agent's incremental token record."""

from __future__ import annotations

import json
import math
import random
import socket
from pathlib import Path
from typing import Any

import pytest

from forge.bench import metrics as M
from forge.bench.agents import Agent, AgentError, parse_spec
from forge.bench.runner import Bench, BenchConfig, run_episode, run_episodes_together
from forge.bench.tasks import CANARY, BenchError, load_task_set, stratified_sample
from forge.teacher.base import Completion, GenParams

REPO = Path(__file__).resolve().parents[1]


# --- metrics ----------------------------------------------------------------------------------
def test_pass_hat_k_formula() -> None:
    # C(c, k) / C(n, k), tau-bench's unbiased estimator.
    assert M.pass_hat_k(4, 4, 4) == 1.0
    assert M.pass_hat_k(4, 3, 4) == 0.0
    assert M.pass_hat_k(4, 2, 1) == 0.5
    assert M.pass_hat_k(4, 3, 2) == pytest.approx(3 / 6)
    assert M.pass_hat_k(8, 5, 3) == pytest.approx(math.comb(5, 3) / math.comb(8, 3))
    # pass^1 is the success rate; pass^k never exceeds it and falls with k.
    trials = [[True, True, False, True], [False] * 4, [True] * 4, [True, False, False, False]]
    assert M.mean_pass_k(trials, 1) == pytest.approx(M.success_rate(trials))
    ks = [M.mean_pass_k(trials, k) for k in (1, 2, 3, 4)]
    assert ks == sorted(ks, reverse=True) and ks[-1] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        M.pass_hat_k(2, 3, 1)


def test_bootstrap_ci_and_spl() -> None:
    rng = random.Random(0)
    trials = [[rng.random() < 0.3] for _ in range(200)]
    lo, hi = M.bootstrap_ci(trials, seed=1)
    p = M.success_rate(trials)
    assert lo < p < hi and hi - lo < 0.2
    assert M.bootstrap_ci([[True]] * 10) == (1.0, 1.0)
    assert M.spl(False, 3, 3) == 0.0
    assert M.spl(True, 6, 3) == 0.5
    assert M.spl(True, 2, 3) == 1.0          # shorter than the known path: capped at 1
    assert M.spl(True, 0, 0) == 1.0 and M.spl(True, 2, 0) == 0.0
    assert M.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert M.spearman([1, 2], [1, 2]) is None


def test_paired_difference() -> None:
    rng = random.Random(0)
    base = {f"t{i}": [rng.random() < 0.4] for i in range(150)}
    same = M.paired_difference(base, base)
    assert same is not None and same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0]
    # Another agent that also solves 12 tasks the first missed and loses 2 it had.
    missed = [t for t, v in base.items() if not v[0]][:12]
    had = [t for t, v in base.items() if v[0]][:2]
    other = {t: [True] if t in missed else [False] if t in had else v
             for t, v in base.items()}
    d = M.paired_difference(base, other)
    assert d is not None
    assert d["difference"] == pytest.approx(10 / 150)
    assert (d["better_on"], d["worse_on"], d["n_tasks"]) == (12, 2, 150)
    lo, hi = d["ci95"]
    assert 0 < lo < d["difference"] < hi
    # Tighter than either separate interval; those overlap, the paired one excludes 0.
    lo_a, hi_a = M.bootstrap_ci(list(base.values()))
    lo_b, hi_b = M.bootstrap_ci(list(other.values()))
    assert hi - lo < min(hi_a - lo_a, hi_b - lo_b) and lo_b < hi_a
    # Only the tasks both ran count; none in common: None.
    part = M.paired_difference(base, {t: other[t] for t in missed})
    assert part is not None and part["n_tasks"] == 12 and part["difference"] == 1.0
    assert M.paired_difference(base, {"elsewhere": [True]}) is None


# --- the shipped task set ------------------------------------------------------------------
@pytest.fixture(scope="module")
def ts() -> Any:
    return load_task_set()


def test_task_set_is_well_formed(ts: Any) -> None:
    tasks = ts.tasks
    assert len(tasks) >= 250
    assert {t.kind for t in tasks} == {"action", "qa"}
    assert {t.difficulty for t in tasks} == {"L1", "L2", "L3"}
    assert sum(t.source == "handwritten" for t in tasks) >= 40
    assert len({t.task_id for t in tasks}) == len(tasks)
    # A canary in every task file.
    for f in ("tasks.jsonl", "scenarios.jsonl", "README.md", "manifest.json"):
        assert CANARY in (ts.path / f).read_text()
    for line in (ts.path / "tasks.jsonl").read_text().splitlines():
        assert json.loads(line)["canary"] == CANARY
    # Every network simulated in ns-3 and shipped.
    import duckdb

    runs = duckdb.connect().execute(
        f"SELECT scenario_id, status FROM read_parquet('{ts.path / 'ns3_runs.parquet'}')"
    ).fetchall()
    assert {s for s, st in runs if st == "ok"} >= {t.scenario_id for t in tasks}


def test_no_task_holds_before_any_action(ts: Any, em: Any) -> None:
    from forge.bench.tasks import parse_goal
    from forge.gym.env import CachedModel
    from forge.gym.goals import AnswerGoal, evaluate

    # The shipped set was placed with the shipped model (its manifest says which): every action
    # goal is certainly unmet under the model's uncertainty band at the start.
    assert ts.manifest["model_hash"] == em.model_hash
    model = CachedModel(em)
    n_action = 0
    for t in ts.tasks:
        g = parse_goal(t.goal)
        if isinstance(g, AnswerGoal):
            continue
        r = evaluate(g, model.view(ts.scenario(t.scenario_id))[1])
        assert not r.holds and r.certain, t.task_id
        n_action += 1
    assert n_action >= 100


def test_stratified_sample_covers_strata(ts: Any) -> None:
    s = stratified_sample(ts.tasks, 24, seed=3)
    assert len(s) == 24
    assert s == stratified_sample(ts.tasks, 24, seed=3)
    assert {t.kind for t in s} == {"action", "qa"}
    assert {t.source for t in s} == {"grammar", "handwritten"}


# --- leakage --------------------------------------------------------------------------------
def test_default_guard_covers_every_shipped_set() -> None:
    """Curation and synthesis turn away bench networks and instructions of every shipped
    version, not only the default one: an older set stays usable for comparisons."""
    from forge.bench.decontam import default_guard
    from forge.bench.tasks import BENCH_DIR

    shipped = [load_task_set(d) for d in sorted(BENCH_DIR.iterdir())
               if (d / "tasks.jsonl").is_file()]
    assert len(shipped) >= 2
    guard = default_guard()
    assert guard is not None
    for ts in shipped:
        assert set(ts.scenarios) <= guard.scenario_ids
        texts = [t.instruction for t in ts.tasks[:20]]
        assert len(guard.near(texts)) == len(texts), ts.version
    assert not guard.near(["Raise cell 0's transmit power by 3 dB and report the new RSRP."])


def test_bench_networks_never_in_synthesis_or_corpus(ts: Any) -> None:
    from forge.synth.scenarios import corpus_scenarios, full_pool

    bench = set(ts.scenarios)
    assert not bench & set(full_pool())
    assert not bench & {s.scenario_id for s, _ in corpus_scenarios()}


def test_no_bench_leak_into_synthesis_pool_or_curated_export(ts: Any, tmp_path: Path) -> None:
    """A real (small) synthesis run and its curated export hold no bench network and no
    near-duplicate of a bench instruction (curation's near-dup rule)."""
    from forge import db as fdb
    from forge.bench.decontam import BenchGuard, overlap_with_export
    from forge.curate import CurateConfig, run
    from forge.synth.loop import GenerateConfig, run_generate

    db = tmp_path / "leak.duckdb"
    rep = run_generate(GenerateConfig(rounds=2, tasks_per_round=96, workers=1, db=str(db),
                                      seed=5))
    assert rep.status == "completed"
    con = fdb.connect(db)
    guard = BenchGuard(ts)
    rows = con.execute("SELECT instruction, scenario_id FROM tasks").fetchall()
    assert rows
    assert not guard.near([r[0] for r in rows])
    assert not {r[1] for r in rows} & guard.scenario_ids
    # A bench instruction proposed by a teacher is turned away with its reason.
    from forge.bench.decontam import drop_bench_overlap

    t0 = ts.tasks[0]
    keep, rej = drop_bench_overlap(
        [{"task_id": "x", "instruction": t0.instruction + " Thanks.", "scenario_id": "s"}],
        "gen-x", 1, "offline")
    assert not keep and rej[0]["reason"] == "bench_overlap"
    out = tmp_path / "curated"
    run(CurateConfig(target="60", allow_short=True, out=str(out), name="leak"), con)
    con.close()
    hits = overlap_with_export(ts, out)
    assert hits["checked_texts"] > 0
    assert hits["scenarios"] == 0 and hits["instructions"] == 0


def test_train_data_overlap_stops_the_bench(ts: Any, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = ts.tasks[0]
    pq.write_table(pa.table({"instruction": ["Something else entirely.", t0.instruction],
                             "scenario_id": ["a", "b"]}), tmp_path / "train.parquet")
    with pytest.raises(BenchError, match="overlaps the bench"):
        Bench(BenchConfig(agents=["noop"], db=":memory:", train_data=str(tmp_path)))


# --- agents -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from forge import db as fdb

    con = fdb.connect(":memory:")
    cfg = BenchConfig(agents=["noop", "random", "threshold-rule", "mape-k", "greedy-what-if",
                              "teacher"], k=2, sample=12, seed=1, workers=1)
    rep = Bench(cfg, con, log=lambda m: None).run()
    rep["_con"] = con
    return rep


def test_every_builtin_agent_runs_and_is_scored(small_report: dict[str, Any]) -> None:
    agents = small_report["agents"]
    assert set(agents) == {"noop", "random", "threshold-rule", "mape-k", "greedy-what-if",
                           "teacher"}
    for name, a in agents.items():
        assert a["n_tasks"] == 12 and a["n_episodes"] == 24, name
        assert "agent_error" not in a["termination"], (name, a["termination"])
        assert set(a["by_difficulty"]) <= {"L1", "L2", "L3"}
        lo, hi = a["ci95"]
        assert lo <= a["success_rate"] <= hi
        assert a["pass_k"] <= a["success_rate"] + 1e-9
    # noop fails every task by construction of the set; the teacher made the data and solves
    # most grammar tasks; operators' rules change the network; random calls tools.
    assert agents["noop"]["success_rate"] == 0.0
    assert agents["noop"]["calls"]["mean_tool_calls"] == 0
    assert agents["teacher"]["by_source"]["grammar"]["success_rate"] >= 0.6
    assert agents["threshold-rule"]["calls"]["mean_tool_calls"] >= 3
    assert agents["mape-k"]["calls"]["mean_tool_calls"] >= 1
    assert agents["greedy-what-if"]["calls"]["mean_tool_calls"] >= 3
    assert agents["random"]["calls"]["mean_tool_calls"] >= 2
    # The scripted baselines write well-formed turns: their failures are outcomes, not format.
    for name in ("noop", "random", "threshold-rule", "greedy-what-if"):
        assert agents[name]["stage_pass_rate"]["format"] == 1.0, name


def test_episodes_are_stored_and_report_is_reproducible(small_report: dict[str, Any]) -> None:
    con = small_report["_con"]
    n = con.execute("SELECT count(*) FROM bench_episodes").fetchone()[0]
    assert n == 6 * 24
    row = con.execute("SELECT messages, stages FROM bench_episodes WHERE success LIMIT 1"
                      ).fetchone()
    assert json.loads(row[0])[0]["role"] == "system"
    assert json.loads(row[1]) == dict.fromkeys(("format", "execution", "outcome", "claims"),
                                               "pass")
    # Same agents, same seed: the stored episodes are reused and the report is identical
    # (timings aside); a fresh recomputation gives the same verdicts too.
    cfg = BenchConfig(agents=["threshold-rule", "teacher"], k=2, sample=12, seed=1, workers=1,
                      compare_to="threshold-rule")
    again = Bench(cfg, con, log=lambda m: None).run()
    # --compare-to: the teacher's paired difference to threshold-rule on the same 12 tasks.
    pd = again["paired"]["agents"]["teacher"]
    sr = {n: again["agents"][n]["success_rate"] for n in ("teacher", "threshold-rule")}
    assert again["paired"]["base"] == "threshold-rule" and pd["n_tasks"] == 12
    assert pd["difference"] == pytest.approx(sr["teacher"] - sr["threshold-rule"], abs=1e-4)
    assert pd["ci95"][0] <= pd["difference"] <= pd["ci95"][1]
    from forge.bench.report import markdown

    assert "Paired difference to threshold-rule" in markdown(again)
    with pytest.raises(BenchError, match="compare-to"):
        Bench(BenchConfig(**{**cfg.__dict__, "compare_to": "mape-k"}), con, log=lambda m: None)
    fresh = Bench(BenchConfig(**{**cfg.__dict__, "fresh": True}), con,
                  log=lambda m: None).run()

    def strip(a: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in a.items() if k not in ("wall_s", "episodes_per_s")}

    assert again["timing"]["teacher"]["episodes_run"] == 0     # all reused from the store
    assert fresh["timing"]["teacher"]["episodes_run"] == 24

    for name in ("threshold-rule", "teacher"):
        assert strip(again["agents"][name]) == strip(small_report["agents"][name])
        assert strip(fresh["agents"][name]) == strip(small_report["agents"][name])

    # --levels L1: the sample is drawn from that level's tasks only.
    l1 = Bench(BenchConfig(**{**cfg.__dict__, "agents": ["teacher"], "levels": "l1",
                              "compare_to": None}), con,
               log=lambda m: None)
    assert len(l1.tasks) == 12 and {t.difficulty for t in l1.tasks} == {"L1"}
    rep = l1.run()
    assert rep["agents"]["teacher"]["by_difficulty"].keys() == {"L1"}
    assert rep["task_set"]["levels"] == "l1"
    with pytest.raises(BenchError, match="levels"):
        Bench(BenchConfig(**{**cfg.__dict__, "levels": "L4"}), con, log=lambda m: None)


def test_report_files(small_report: dict[str, Any], tmp_path: Path) -> None:
    from forge.bench import report as R

    rep = {k: v for k, v in small_report.items() if not k.startswith("_")}
    paths = R.write(rep, tmp_path)
    assert json.loads(paths["json"].read_text())["agents"]["teacher"]["n_tasks"] == 12
    md = paths["md"].read_text()
    assert "| teacher |" in md and "pass^2" in md
    assert paths["png"].stat().st_size > 1000


class Garbage(Agent):
    name = "garbage"

    def episode(self, seed: int) -> Any:
        def chat(messages: list[dict[str, Any]], params: GenParams) -> Completion:
            return Completion('<action>{"tool": "get_network_summ', "stop", 5, 5)

        return chat


class Exploding(Agent):
    name = "exploding"

    def episode(self, seed: int) -> Any:
        def chat(messages: list[dict[str, Any]], params: GenParams) -> Completion:
            raise RuntimeError("the agent crashed")

        return chat


def test_agent_garbage_is_a_recorded_failure(ts: Any, em: Any) -> None:
    from forge.gym.env import CachedModel
    from verifiers import TrajectoryVerifier

    model = CachedModel(em)
    v = TrajectoryVerifier(model)
    t = ts.tasks[0]
    cfg = BenchConfig(k=1)
    row = run_episode(Garbage(), t, ts.scenario(t.scenario_id), 0, cfg, model, v)
    assert row["success"] is False and row["termination"] == "parse_error"
    assert row["reject_stage"] == "parse"
    row = run_episode(Exploding(), t, ts.scenario(t.scenario_id), 0, cfg, model, v)
    assert row["success"] is False and row["termination"] == "agent_error"
    assert "crashed" in row["error"]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_endpoint_stops_with_a_clear_error(tmp_path: Path, capsys: Any) -> None:
    from forge.__main__ import main

    url = f"http://127.0.0.1:{_free_port()}/v1"
    rc = main(["bench", "--agent", f"openai:some-model@{url}", "--sample", "2", "--k", "1",
               "--db", str(tmp_path / "b.duckdb"), "--out", str(tmp_path / "out"),
               "--timeout-s", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error:" in err and "127.0.0.1" in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_agent_specs() -> None:
    assert parse_spec("teacher").kind == "builtin"
    s = parse_spec("openai:m@http://h:1/v1")
    assert (s.kind, s.model, s.base_url) == ("openai", "m", "http://h:1/v1")
    assert parse_spec("hf:build/x").path == "build/x"
    for bad in ("nope", "openai:m", "openai:m@ftp://x", "hf:"):
        with pytest.raises(AgentError):
            parse_spec(bad)


def test_hf_agent_builds_its_token_record_incrementally(ts: Any, em: Any, tmp_path: Path
                                                        ) -> None:
    """A tiny random checkpoint in closed loop: whatever it writes, the episode ends cleanly,
    and the ids it built turn by turn equal the codec's encoding of the final conversation
    (nothing re-tokenised, nothing lost), with the mask on its own tokens only."""
    from forge.bench.hf import HFAgent
    from forge.gym.env import CachedModel
    from forge.train.chat import ChatCodec
    from forge.train.model import build_tiny, save_checkpoint
    from forge.train.tokenizer import train_tokenizer
    from verifiers import TrajectoryVerifier

    texts = [t.instruction for t in ts.tasks[:50]] + ['<action>{"tool": "get_network_summary"}']
    tok = train_tokenizer(texts, vocab_size=400)
    model = build_tiny(tok, preset="micro", context=512)
    ck = save_checkpoint(model, tok, tmp_path / "ck")
    agent = HFAgent(str(ck))
    t = next(x for x in ts.tasks if x.kind == "action")
    cm = CachedModel(em)
    cfg = BenchConfig(k=1, max_tokens=24, temperature=1.0, max_steps=3)
    from forge.synth.solve import EpisodeRun, drive_sync

    run = EpisodeRun(t.as_task(), ts.scenario(t.scenario_id), cm, env_seed=0,
                     cfg=cfg.solve_cfg())
    chat = agent.episode(7)
    drive_sync(run, chat, GenParams(temperature=1.0, max_tokens=24, seed=7))
    msgs = run.ep.messages
    codec = ChatCodec(tok, compact=True)
    # Expected record: every non-assistant message encoded once; every assistant turn is the
    # sampled ids themselves (re-encoding decoded text may tokenise differently).
    expect: list[int] = []
    k = 0
    for m in msgs:
        if m["role"] == "assistant":
            a, b = chat.turns[k]
            assert codec.decode_turn(chat.ids[a:b]) == m["content"]
            expect += codec.assistant_prefix() + chat.ids[a:b] + codec.end_of_turn()
            k += 1
        else:
            expect += codec.encode_message(m)[0]
    assert chat.ids[:len(expect)] == expect
    trained = {i for a, b in chat.turns for i in range(a, b)}
    assert {i for i, x in enumerate(chat.mask) if x} == trained
    # The scored episode row also comes out cleanly.
    row = run_episode(agent, t, ts.scenario(t.scenario_id), 0, cfg, cm, TrajectoryVerifier(cm))
    assert row["termination"] in ("answer", "truncated", "parse_error", "step_budget", "loop")
    # The bench runs hf agents' episodes side by side: the same rows as one at a time.
    jobs = [(x, ts.scenario(x.scenario_id), k) for x in ts.tasks[:3] for k in (0, 1)]
    rows = run_episodes_together(agent, jobs, cfg, cm, TrajectoryVerifier(cm))
    for (x, scn, k), r in zip(jobs, rows, strict=True):
        one = run_episode(agent, x, scn, k, cfg, cm, TrajectoryVerifier(cm))
        assert (r["messages"], r["termination"], r["success"]) == \
               (one["messages"], one["termination"], one["success"])


def test_turns_decoded_together_are_the_turns_decoded_alone(ts: Any, tmp_path: Path) -> None:
    """`generate_together` is a speed-up only: over several turns of several episodes (with
    different budgets, so rows leave the batch at different steps, and caches of different
    lengths, so the left padding matters), each episode draws exactly the tokens it draws when
    decoded alone, and keeps the same token record and KV cache length."""
    import torch

    from forge.bench.hf import HFAgent, generate_together
    from forge.train.model import build_tiny, save_checkpoint
    from forge.train.tokenizer import train_tokenizer

    texts = [t.instruction for t in ts.tasks[:50]] + ['<action>{"tool": "get_network_summary"}']
    tok = train_tokenizer(texts, vocab_size=400)
    torch.manual_seed(0)
    model = build_tiny(tok, preset="micro", context=512)
    # Larger random weights than the default init: attention far from uniform, so a wrong
    # position or an attended pad changes what the model computes (checked by breaking each).
    for w in model.parameters():
        if w.dim() == 2:
            torch.nn.init.normal_(w, std=0.2)
    ck = save_checkpoint(model, tok, tmp_path / "ck")
    agent = HFAgent(str(ck))
    agent.warm_prefix("You run a mobile network.")
    convs = [[{"role": "system", "content": "You run a mobile network."},
              {"role": "user", "content": t.instruction}] for t in ts.tasks[:4]]
    for temp in (0.0, 1.0):
        params = [GenParams(temperature=temp, max_tokens=3 + 4 * i, seed=i) for i in range(4)]
        alone = [agent.episode(i) for i in range(4)]
        together = [agent.episode(i) for i in range(4)]
        a_convs = [list(c) for c in convs]
        b_convs = [list(c) for c in convs]
        for turn in range(3):
            a = [e(c, p) for e, c, p in zip(alone, a_convs, params, strict=True)]
            b = generate_together(together, b_convs, params)
            assert [(x.text, x.finish_reason, x.completion_tokens) for x in a] == \
                   [(x.text, x.finish_reason, x.completion_tokens) for x in b], (temp, turn)
            for c_a, c_b, x in zip(a_convs, b_convs, a, strict=True):
                for c in (c_a, c_b):
                    c += [{"role": "assistant", "content": x.text},
                          {"role": "tool", "content": f"<ans>turn {turn}</ans>"}]
        for e_a, e_b in zip(alone, together, strict=True):
            assert (e_a.ids, e_a.mask, e_a.turns) == (e_b.ids, e_b.mask, e_b.turns)
            assert e_a._cache.get_seq_length() == e_b._cache.get_seq_length() == e_b._cached
            # The caches agree to float rounding (an attended pad can leave the tokens drawn
            # unchanged but not these values).
            for la, lb in zip(e_a._cache.layers, e_b._cache.layers, strict=True):
                torch.testing.assert_close(la.keys, lb.keys, atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(la.values, lb.values, atol=1e-4, rtol=1e-4)
        # The four episodes are not copies of each other (else equality would prove little).
        assert len({tuple(e.ids) for e in together}) == 4


@pytest.mark.flows
def test_bench_deployment_runs_the_same_code(tmp_path: Path) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.forge_flow import deployments, forge

    assert {"bench", "train-sft", "train-rl"} <= {d.name for d in deployments()}
    with prefect_test_harness(server_startup_timeout=60):
        out = forge(stage="bench", agents=["noop", "teacher"], k=1, sample=4,
                    db=str(tmp_path / "b.duckdb"), extra_args=["--out", str(tmp_path / "r")])
    assert out["exit_code"] == 0
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert set(rep["agents"]) == {"noop", "teacher"} and rep["task_set"]["n_tasks"] == 4


def test_ns3_recheck_judges_answers_on_shipped_ns3_runs(ts: Any) -> None:
    """Questions leave the network as it was: their ns-3 re-check reads the task set's shipped
    ns-3 run of the initial state (no simulation) and judges the answer on ns-3's values."""
    from forge import db as fdb
    from forge.bench.ns3check import ns3_check, shipped_ues

    con = fdb.connect(":memory:")
    b = Bench(BenchConfig(agents=["noop", "teacher"], k=1, workers=1), con, log=lambda m: None)
    b.tasks = [t for t in ts.tasks if t.kind == "qa" and t.source == "grammar"][:6]
    runs = {s.spec: b.run_agent(s) for s in b.specs}
    chk = ns3_check(b, runs, 6)
    assert chk["simulations"] >= 1
    assert chk["agents"]["noop"] == {"n": 6, "success_model": 0.0, "success_ns3": 0.0,
                                     "agreement": 1.0}
    t = chk["agents"]["teacher"]
    assert t["n"] == 6 and t["success_model"] > 0 and t["agreement"] is not None
    assert shipped_ues(ts.path, b.tasks[0].scenario_id)
    rows = con.execute("SELECT count(*) FROM bench_ns3_checks").fetchone()[0]
    assert rows == 12
