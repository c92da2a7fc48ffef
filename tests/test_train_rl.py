"""Stage 2 (RL): closed-loop rollouts in the real gym through the shared episode runner, the
token record and env mask built while generating, the reward components with the dual token
budget, and a few GSPO steps through TRL's real GRPOTrainer on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from forge.train.rl import RLDataError, RLRunConfig, TokenPenalty, load_rl_tasks


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real small pool (offline teacher) curated into an export with an RL prompt set."""
    from forge import db as fdb
    from forge.curate import CurateConfig, run
    from forge.synth.loop import GenerateConfig, run_generate

    d = tmp_path_factory.mktemp("rl")
    db = d / "pool.duckdb"
    run_generate(GenerateConfig(rounds=1, tasks_per_round=32, workers=1, db=str(db), seed=11))
    con = fdb.connect(db)
    run(CurateConfig(target="80", allow_short=True, out=str(d / "export"), name="rl"), con)
    con.close()
    return d / "export"


@pytest.fixture(scope="module")
def checkpoint(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasets import load_from_disk

    from forge.train.chat import ChatCodec
    from forge.train.model import build_tiny, save_checkpoint
    from forge.train.tokenizer import train_tokenizer

    ds = load_from_disk(str(export / "dataset"))["train"]
    texts = [m["content"] or "" for row in ds for m in row["messages"]]
    tok = train_tokenizer(texts, vocab_size=600)
    ChatCodec(tok)  # the protocol tokens are single ids
    model = build_tiny(tok, preset="micro", context=1024)
    return save_checkpoint(model, tok, tmp_path_factory.mktemp("ck") / "ck")


def test_rl_prompts_load_and_bad_input_is_refused(export: Path, tmp_path: Path) -> None:
    tasks = load_rl_tasks(export)
    assert tasks and all(t.messages[0]["role"] == "system" for t in tasks)
    assert all(t.scenario is not None and t.task["goal"] for t in tasks)
    with pytest.raises(RLDataError, match="no RL prompt set"):
        load_rl_tasks(tmp_path)
    # --levels keeps only those difficulties (their ids are a subset of the whole set's).
    ids = {t.task["task_id"] for t in tasks}
    l1 = load_rl_tasks(export, "L1")
    assert l1 and len(l1) < len(tasks) and {t.task["task_id"] for t in l1} <= ids
    with pytest.raises(RLDataError, match="levels"):
        load_rl_tasks(export, "L9")


def test_rl_prompts_mix_kinds_like_sft(export: Path) -> None:
    from forge.db import ForgeError
    from forge.train.sft import mix_indices

    tasks = load_rl_tasks(export)
    kinds = [t.task["kind"] for t in tasks]
    assert {"qa", "action"} <= set(kinds)
    assert mix_indices(kinds, 0.0) == list(range(len(kinds)))
    keep = mix_indices(kinds, 0.75, seed=3)
    got = [kinds[i] for i in keep]
    assert len(set(keep)) == len(keep) and abs(got.count("qa") - 0.75 * len(got)) <= 1
    with pytest.raises(ForgeError, match="--qa-share"):
        RLRunConfig(qa_share=1.0).effective()
    with pytest.raises(ForgeError, match="--entropy-target"):
        RLRunConfig(entropy_target_ratio=0.0).effective()


def test_rollout_token_record_and_env_mask(export: Path, checkpoint: Path, em: Any) -> None:
    from forge.bench.hf import HFAgent
    from forge.gym.env import CachedModel
    from forge.train.model import codec_for, load_checkpoint
    from forge.train.rl import rollout
    from verifiers import TrajectoryVerifier

    model, tok = load_checkpoint(checkpoint)
    codec = codec_for(checkpoint, tok)
    agent = HFAgent.from_model(model, codec, max_context=1024)
    cm = CachedModel(em)
    cfg = RLRunConfig(max_turn_tokens=40, max_tool_calls=3, temperature=1.0)
    t = load_rl_tasks(export)[0]
    r = rollout(agent, t, cm, TrajectoryVerifier(cm), cfg, seed=3)
    # The prompt is exactly the encoded system + user messages and the assistant header.
    ids, _ = codec.encode(t.messages)
    assert r.prompt_ids == ids + codec.assistant_prefix()
    assert len(r.completion_ids) == len(r.env_mask)
    assert r.n_tokens == sum(r.env_mask) > 0
    # Loss exactly on the policy's own turns: observations and headers carry none.
    own = {i for a, b in r.turns for i in range(a, b)}
    assert {i for i, m in enumerate(r.env_mask) if m} == own
    # A completion either ends on the policy's EOS or was cut off (TRL counts it truncated).
    if r.completion_ids and r.completion_ids[-1] == codec.eos_id:
        assert r.env_mask[-1] == 1
    # A prompt that fills the context leaves no room to generate: the completion is one EOS
    # with no loss on it (TRL reads every completion's last token).
    tight = HFAgent.from_model(model, codec, max_context=len(r.prompt_ids))
    e = rollout(tight, t, cm, TrajectoryVerifier(cm), cfg, seed=3)
    assert e.completion_ids == [codec.eos_id] and e.env_mask == [0] and e.n_tokens == 0
    assert not e.success


def test_rollout_is_verified_in_the_env_it_ran_in(export: Path, checkpoint: Path, em: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifiers replay an episode in an env of the seed they are given: it must be the
    rollout's own env seed (a replay in another seed's noise judges every quoted figure
    wrong)."""
    import forge.synth.solve as S
    from forge.bench.hf import HFAgent
    from forge.gym.env import CachedModel
    from forge.train.model import codec_for, load_checkpoint
    from forge.train.rl import rollouts
    from verifiers import TrajectoryVerifier

    model, tok = load_checkpoint(checkpoint)
    agent = HFAgent.from_model(model, codec_for(checkpoint, tok), max_context=1024)
    cm = CachedModel(em)
    seen: list[tuple[int, int]] = []
    real = S.to_row

    def spy(task: Any, scn: Any, ep: Any, attempt: int, *a: Any, **k: Any) -> Any:
        seen.append((attempt, len(ep.messages)))
        return real(task, scn, ep, attempt, *a, **k)

    monkeypatch.setattr(S, "to_row", spy)
    cfg = RLRunConfig(max_turn_tokens=30, max_tool_calls=2, temperature=1.0, rollout_batch=2)
    rollouts(agent, load_rl_tasks(export)[:2], cm, TrajectoryVerifier(cm), cfg, [1234, 2077])
    assert [a for a, _ in seen] == [234, 77]


def test_rollouts_side_by_side_and_plain_forward(export: Path, checkpoint: Path,
                                                 em: Any) -> None:
    """Rollouts decoded side by side are the rollouts decoded one at a time; inside the
    trainer they run the model class's own forward, not the wrapper accelerate installs (bf16
    autocast per generated token), which is put back afterwards."""
    import torch

    from forge.bench.hf import HFAgent
    from forge.gym.env import CachedModel
    from forge.train.model import codec_for, load_checkpoint
    from forge.train.rl import plain_forward, rollouts
    from verifiers import TrajectoryVerifier

    model, tok = load_checkpoint(checkpoint)
    codec = codec_for(checkpoint, tok)
    agent = HFAgent.from_model(model, codec, max_context=1024)
    cm = CachedModel(em)
    tasks = load_rl_tasks(export)[:3] * 2
    got = []
    for batch in (1, 6):
        cfg = RLRunConfig(max_turn_tokens=40, max_tool_calls=3, temperature=1.0,
                          rollout_batch=batch)
        rs = rollouts(agent, tasks, cm, TrajectoryVerifier(cm), cfg, list(range(6)))
        got.append([(r.completion_ids, r.env_mask, r.termination) for r in rs])
    assert got[0] == got[1]
    assert len({tuple(c) for c, _, _ in got[1]}) > 1

    def wrapped(*a: Any, **k: Any) -> Any:
        raise AssertionError("the trainer's wrapped forward ran during a rollout")

    model.forward = wrapped
    with plain_forward(model), torch.inference_mode():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    assert model.forward is wrapped


def test_policy_entropy_counts_only_the_policys_tokens(checkpoint: Path) -> None:
    import torch

    from forge.train.model import load_checkpoint
    from forge.train.rl import Rollout, policy_entropy

    model, _ = load_checkpoint(checkpoint)
    # Give the barely trained model an output layer with larger, seeded weights: its
    # near-uniform distributions had nearly the same entropy at every position (ln 600), and
    # the means over 3 and over 5 tokens agreed to 3e-6 in a fresh clone, so the test could not
    # tell them apart.
    with torch.no_grad():
        w = model.get_output_embeddings().weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    prompt, completion = [5, 9, 17, 3], [21, 8, 30, 11, 2]
    mask = [1, 0, 0, 1, 1]          # tokens 2 and 3 are an observation: no entropy counted
    r = Rollout(prompt_ids=prompt, completion_ids=completion, env_mask=mask, success=True,
                format_ok=True, n_calls=0, n_tokens=3, repeats=0, termination="answer",
                turns=[(0, 5)])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    # Completion token j is predicted by the logits at position len(prompt) - 1 + j.
    ent = []
    for j in range(5):
        p = torch.softmax(logits[len(prompt) - 1 + j], dim=-1)
        ent.append(float(-(p * p.log()).sum()))
    policy_only = sum(ent[j] for j in (0, 3, 4)) / 3
    assert abs(policy_only - sum(ent) / 5) > 1e-2  # the test can tell the two apart
    assert policy_entropy(model, [r]) == pytest.approx(policy_only, rel=1e-5)
    everywhere = Rollout(**{**r.__dict__, "env_mask": [1] * 5})
    assert policy_entropy(model, [everywhere]) == pytest.approx(sum(ent) / 5, rel=1e-5)
    assert policy_entropy(model, []) == 0.0


def test_dynamic_sampling_replaces_groups_without_signal(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Planted outcomes: "ok" tasks always succeed, "no" tasks always fail, "mix" tasks succeed
    on even seeds only (so a group of two consecutive seeds disagrees)."""
    from types import SimpleNamespace

    import forge.train.rl as rl
    from forge.train.rl import RLTask, Rollout, RolloutFunc

    def task(name: str) -> RLTask:
        return RLTask({"task_id": name, "kind": "qa"}, None,
                      [{"role": "system", "content": "s"}, {"role": "user", "content": name}])

    def fake(agent: Any, tasks: list[RLTask], em: Any, verifier: Any, cfg: Any,
             seeds: list[int]) -> list[Rollout]:
        out = []
        for t, seed in zip(tasks, seeds, strict=True):
            name = t.task["task_id"]
            ok = name.startswith("ok") or (name.startswith("mix") and seed % 2 == 0)
            out.append(Rollout([len(name)], [ord(name[-1])], [1], ok, True, 1, 1, 0, "answer",
                               [(0, 1)]))
        return out

    class Model:
        training = False
        config = SimpleNamespace(max_position_embeddings=64)

        def eval(self) -> None: ...

        def train(self) -> None: ...

    model = Model()
    trainer = SimpleNamespace(model=model,
                              accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    codec = SimpleNamespace(tokenizer=[0] * 100)
    monkeypatch.setattr(rl, "rollouts", fake)
    front = [task("ok-A"), task("no-B")]
    prompts = [t.messages for t in front for _ in range(2)]

    def call(ds: int, reserve: list[RLTask]) -> tuple[RolloutFunc, list[dict[str, Any]]]:
        cfg = RLRunConfig(num_generations=2, dynamic_sampling=ds)
        rf = RolloutFunc(front, cfg, codec, None, None, reserve)
        return rf, [rf(prompts, trainer), rf(prompts, trainer)]

    # Off: both calls train on exactly the groups TRL asked for, uniform or not.
    rf, outs = call(0, [task("mix-1"), task("mix-3")])
    assert all(o["success"] == [True, True, False, False] for o in outs)
    assert rf.retired == set() and len(rf.reserve) == 2
    # On (reserve used from the end: mix-3, then no-2, then mix-1).
    rf, (first, second) = call(2, [task("mix-1"), task("no-2"), task("mix-3")])
    # Call 1: both groups uniform; mix-3 replaces ok-A's group, no-2 (uniform too) is dropped.
    assert sorted(first["success"][:2]) == [False, True] and first["success"][2:] == [False] * 2
    assert first["completion_ids"][:2] == [[ord("3")]] * 2
    assert rf.retired == {"ok-A"}
    assert rf.log[0] | {"terminations": None} == rf.log[0] | {
        "retired_swapped": 0, "uniform_groups": 2, "resampled": 2, "replaced": 1,
        "episodes": 8, "terminations": None}
    # Call 2: retired ok-A is swapped for mix-1 before running; no-B stays (reserve empty).
    assert sorted(second["success"][:2]) == [False, True]
    assert second["success"][2:] == [False] * 2
    assert second["completion_ids"][:2] == [[ord("1")]] * 2
    assert rf.log[1]["retired_swapped"] == 1 and rf.log[1]["resampled"] == 0


def test_greedy_misses_are_listed_again() -> None:
    from forge.train.rl import RLTask, weight_greedy_misses

    def task(i: int) -> RLTask:
        return RLTask(task={"task_id": f"t{i}", "kind": "qa"}, scenario=None,
                      messages=[{"role": "system", "content": ""},
                                {"role": "user", "content": f"q{i}"}])

    front = [task(0), task(1), task(2)]
    out, info = weight_greedy_misses(front, {"t0": True, "t1": False, "t2": False}, 2)
    assert [t.task["task_id"] for t in out] == ["t0", "t1", "t2", "t1", "t2", "t1", "t2"]
    assert info == {"misses": 2, "frontier": 3, "extra_copies": 2}
    # A prompt whose greedy episode was not run counts as solved: it is not repeated.
    out, info = weight_greedy_misses(front, {}, 2)
    assert out == front and info["misses"] == 0


def test_token_penalty_dual_update() -> None:
    tp = TokenPenalty(budget=100, eta=0.01, lam0=0.0)
    assert tp(n_tokens=[300, 300]) == [0.0, 0.0]          # lambda was 0 for this batch
    assert tp.lam == pytest.approx(2.0)                     # 0 + 0.01 * (300 - 100)
    assert tp(n_tokens=[50, 50]) == [-100.0, -100.0]
    assert tp.lam == pytest.approx(1.5)
    tp(n_tokens=[0] * 4)
    tp(n_tokens=[0] * 4)
    assert tp.lam == 0.0                                    # projected at 0


def test_gspo_steps_through_trl(export: Path, checkpoint: Path, tmp_path: Path) -> None:
    from forge.train.model import load_checkpoint
    from forge.train.rl import run_rl

    m = run_rl(RLRunConfig(model=str(checkpoint), data=str(export), out=str(tmp_path / "rl"),
                           steps=2, prompts_per_step=2, num_generations=2, frontier_pool=3,
                           frontier_rollouts=1, max_turn_tokens=40, max_tool_calls=3,
                           frontier_greedy=1, threads=1), log=lambda s: None)
    assert m["steps"] == 2
    # TRL hands rollout_func prompts already repeated num_generations times.
    assert m["prompts_received_per_call"] == [4, 4]
    h = m["history"]
    for key in ("rewards/task_success/mean", "rewards/format_valid/mean",
                "rewards/tool_efficiency/mean", "rewards/token_penalty/mean",
                "rewards/repetition/mean", "entropy"):
        assert all(key in x for x in h), key
    assert len(m["lambda_tok"]) == 2
    # Auto entropy target: a share of the starting policy's measured entropy.
    f = m["frontier"]
    assert f["policy_entropy"] > 0
    assert f["entropy_target"] == pytest.approx(0.6 * f["policy_entropy"], abs=1e-4)
    assert sum(k["pool"] for k in f["by_kind"].values()) == f["pool"]
    # One greedy episode per pooled prompt was run: its pass rate is a count over the pool.
    g = f["greedy"]
    assert 0 <= g["solved"] <= f["pool"] and g["pass_rate"] == round(g["solved"] / f["pool"], 4)
    assert g["extra_copies"] == 1 and 0 <= g["misses"] <= g["frontier"]
    # The histogram counts prompts, not the misses' extra copies.
    assert f["pass_rate_hist"]["between"] == f["greedy"]["frontier"]
    assert m["config"]["importance_sampling_level"] == "sequence"
    assert m["config"]["epsilon_high"] > m["config"]["epsilon"]
    assert (tmp_path / "rl" / "rl.png").stat().st_size > 1000
    meta = json.loads((tmp_path / "rl" / "checkpoint" / "forge_train.json").read_text())
    assert meta["stage"] == "rl"
    load_checkpoint(tmp_path / "rl" / "checkpoint")
