"""Stage 1 (SFT) and the chat codec, on a real export built here from scripted gym trajectories.

No download: tokenizers are trained on the export's own text and models are built from a
config (the `micro` preset, ~0.2M parameters), trained through TRL's real SFTTrainer on CPU with
one torch thread (faster than two oversubscribed threads on a shared 2-core machine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from forge import db as forge_db
from forge.curate import CurateConfig, run
from forge.curate.fixtures import insert_pool, pool_rows, with_error_recovery
from forge.gym.closed_form import ClosedFormModel
from forge.gym.scripted import generate
from forge.gym.tags import ACTION_OPEN, ANS_OPEN, has_action, parse_action
from forge.teacher.prompts import solve_system_prompt
from forge.train.chat import IM_END, SPECIAL_TOKENS, ChatCodec, compact_content
from forge.train.sft import (
    DatasetNotFoundError,
    MissingColumnsError,
    ModelPathError,
    SFTRunConfig,
    UnbalancedMarkersError,
    render_for_tokenizer,
    run_sft,
)
from forge.train.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small curated export in the text rendering, with the solve system prompt that
    `forge generate` writes (the scripted planner writes a shorter one)."""
    from datasets import DatasetDict, load_from_disk

    m = ClosedFormModel()
    trs = generate(24, m, seed=21)
    trs = [with_error_recovery(t, m) if i % 5 == 0 else t for i, t in enumerate(trs)]
    con = forge_db.connect(":memory:")
    insert_pool(con, [pool_rows(t) for t in trs])
    out = tmp_path_factory.mktemp("export") / "set"
    run(CurateConfig(target=16, out=str(out), max_tool_share=1.0, max_family_share=1.0,
                     splits="70/20/10", quiet=True), con=con, argv=[])
    dd = load_from_disk(str(out / "dataset"))
    sysp = solve_system_prompt()

    def solve_prompt(row: dict[str, Any]) -> dict[str, Any]:
        msgs = [dict(x) for x in row["messages"]]
        msgs[0]["content"] = sysp
        return {"messages": msgs}

    # Keep the two splits SFT reads.
    dd = DatasetDict({s: dd[s].map(solve_prompt) for s in ("train", "validation")})
    final = out.parent / "solve"
    dd.save_to_disk(str(final / "dataset"))
    return final


@pytest.fixture(scope="module")
def rows(export: Path) -> list[list[dict[str, Any]]]:
    from datasets import load_from_disk

    return list(load_from_disk(str(export / "dataset"))["train"]["messages"])


@pytest.fixture(scope="module")
def tok(rows: list[list[dict[str, Any]]]) -> Any:
    return train_tokenizer([render_for_tokenizer(m, True) for m in rows], vocab_size=1024)


def test_special_tokens_are_single_ids(tok: Any) -> None:
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))
    for t, i in zip(SPECIAL_TOKENS, ids, strict=True):
        assert tok.encode(t, add_special_tokens=False) == [i]
        # Inside text too: never split, never merged with neighbours.
        inner = tok.encode(f"a{t}b", add_special_tokens=False)
        assert inner.count(i) == 1 and len(inner) == 3
    ChatCodec(tok)   # the codec's own check passes


def test_codec_concatenation_and_text_agree(tok: Any, rows: list[list[dict[str, Any]]]) -> None:
    codec = ChatCodec(tok)
    # The batched encoder (SFT's data path) gives exactly the per-conversation ids and masks,
    # also across chunk boundaries.
    assert codec.encode_many(rows[:20], chunk=7) == [codec.encode(m) for m in rows[:20]]
    for msgs in rows[:6]:
        ids, mask = codec.encode(msgs)
        cat_ids: list[int] = []
        cat_mask: list[int] = []
        for m in msgs:
            i, k = codec.encode_message(m)
            cat_ids += i
            cat_mask += k
        assert (ids, mask) == (cat_ids, cat_mask)
        # The per-message ids are also what the tokenizer makes of the whole ChatML text,
        # and they decode back to it.
        text = codec.render(msgs)
        assert ids == tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids, skip_special_tokens=False) == text
        # An assistant message = the generation prefix + its content + <|im_end|> + the turn
        # tail, which is what a rollout appends.
        for m in msgs:
            if m["role"] == "assistant":
                i, _ = codec.encode_message(m)
                body = tok.encode(m["content"], add_special_tokens=False)
                assert i == codec.assistant_prefix() + body + [codec.eos_id] + codec.end_of_turn()
                assert codec.decode_turn([*body, codec.eos_id, 5, 6]) == m["content"]


def _leaves(v: Any) -> list[tuple[str, Any]]:
    """Every scalar of a JSON value, normalised (numbers as floats rounded to 3 decimals)."""
    if isinstance(v, dict):
        return [x for y in v.values() for x in _leaves(y)]
    if isinstance(v, list):
        return [x for y in v for x in _leaves(y)]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return [(type(v).__name__, v)]
    return [("num", round(float(v), 3))]


def _headers(v: Any) -> list[tuple[str, Any]]:
    """The column names of the compact tables (keys written once, as values)."""
    if isinstance(v, dict):
        own = [("str", c) for c in v["cols"]] if set(v) == {"cols", "rows"} else []
        return own + [x for y in v.values() for x in _headers(y)]
    if isinstance(v, list):
        return [x for y in v for x in _headers(y)]
    return []


def test_compact_rendering_keeps_every_value(rows: list[list[dict[str, Any]]]) -> None:
    from forge.gym.tags import parse_ans

    n_tables = 0
    for msgs in rows:
        for m in msgs:
            if m["role"] in ("user", "assistant"):
                assert compact_content(m["role"], m["content"]) == m["content"]
            if m["role"] != "tool":
                continue
            full, _ = parse_ans(m["content"])
            small_text = compact_content("tool", m["content"])
            small, problem = parse_ans(small_text)
            assert problem is None and len(small_text) <= len(m["content"])
            assert small_text == f"<ans>{json.dumps(small, separators=(',', ':'))}</ans>"
            n_tables += small_text.count('"cols":')
            body = full["result"] if full["ok"] else {k: v for k, v in full.items()
                                                      if k != "tool"}
            # The same values, table headers aside: nothing an answer could quote is lost.
            got = _leaves(small)
            for h in _headers(small):
                got.remove(h)
            assert sorted(got, key=repr) == sorted(_leaves(body), key=repr)
    assert n_tables > 0
    sysp = compact_content("system", solve_system_prompt())
    assert len(sysp) < len(solve_system_prompt()) / 5
    assert "what_if" in sysp and "<action>" in sysp and "<answer>" in sysp
    # The one-line system text of models trained from scratch keeps only the protocol.
    short = compact_content("system", solve_system_prompt(), short_system=True)
    assert len(short) < len(sysp) / 5 and "<action>" in short and "<answer>" in short
    assert compact_content("system", "another system text", short_system=True) == \
        "another system text"


def test_masking_position_by_position(tok: Any, rows: list[list[dict[str, Any]]]) -> None:
    codec = ChatCodec(tok)
    msgs = next(m for m in rows if sum(x["role"] == "tool" for x in m) >= 2)
    ids, mask = codec.encode(msgs)
    assert len(ids) == len(mask)
    pos = 0
    for m in msgs:
        head = codec.assistant_prefix() if m["role"] == "assistant" else \
            [codec.im_start_id, *tok.encode(m["role"] + "\n", add_special_tokens=False)]
        body = tok.encode(codec.render_content(m), add_special_tokens=False)
        tail = tok.encode("\n", add_special_tokens=False)
        seg = ids[pos:pos + len(head) + len(body) + 1 + len(tail)]
        seg_mask = mask[pos:pos + len(seg)]
        assert seg == [*head, *body, codec.eos_id, *tail]
        trained = 1 if m["role"] == "assistant" else 0
        # Header: never trained. Content and its <|im_end|>: trained only for the assistant.
        # The newline after <|im_end|>: never trained.
        assert seg_mask == [0] * len(head) + [trained] * (len(body) + 1) + [0] * len(tail)
        if m["role"] == "tool":
            # Every observation token, the <ans> tags included, is context only.
            assert body[0] == tok.convert_tokens_to_ids(ANS_OPEN)
        if m["role"] == "assistant" and has_action(m["content"]):
            assert tok.convert_tokens_to_ids(ACTION_OPEN) in body
        pos += len(seg)
    assert pos == len(ids)
    # The trained tokens, read back, are exactly the assistant turns and their ends.
    trained_text = tok.decode([i for i, k in zip(ids, mask, strict=True) if k],
                              skip_special_tokens=False)
    assert trained_text == "".join(m["content"] + IM_END for m in msgs
                                   if m["role"] == "assistant")
    ans_id = tok.convert_tokens_to_ids(ANS_OPEN)
    assert all(k == 0 for i, k in zip(ids, mask, strict=True) if i == ans_id)


def _cfg(export: Path, out: Path, **kw: Any) -> SFTRunConfig:
    # Sequences cut at 512 tokens: attention dominates the cost of long sequences on a model
    # this small, and the checks below do not need whole episodes.
    base = {"data": str(export), "out": str(out), "model": "micro", "batch_size": 2,
            "max_length": 512, "overlong": "truncate", "vocab_size": 1024, "threads": 1,
            "logging_steps": 2, "eval_steps": 3, "max_eval_samples": 2, "warmup": 0.0}
    return SFTRunConfig(**{**base, **kw})


def test_sft_loss_falls_and_checkpoint_loads(export: Path, tmp_path: Path) -> None:
    from forge.train.model import codec_for, load_checkpoint

    m = run_sft(_cfg(export, tmp_path / "run", max_steps=6, lr=5e-3), log=lambda *_: None)
    assert m["steps"] == 6
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["eval_loss_last"] < m["eval_loss_first"]
    assert m["tokens_seen"] > m["tokens_trained"] > 0 and m["tokens_per_s"] > 0
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["eval_loss_last"] == m["eval_loss_last"]
    model, tok2 = load_checkpoint(m["checkpoint"])
    codec = codec_for(m["checkpoint"], tok2)
    assert codec.compact and codec.eos_id == tok2.convert_tokens_to_ids(IM_END)
    # A model built from a config is trained (and must be run) with the one-line system text.
    assert codec.short_system and m["config"]["system"] == "auto"
    assert codec.meta() == {"compact": True, "short_system": True}
    assert model.config.vocab_size == len(tok2)


def test_bf16_setting_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from forge.db import ForgeError
    from forge.train import model as M

    small, large = torch.nn.Linear(4, 4), torch.nn.Linear(M.BF16_MIN_PARAMS, 1, bias=False)
    assert M.use_bf16("on", small) and not M.use_bf16("off", large)
    with pytest.raises(ForgeError, match="--bf16 must be auto, on or off"):
        M.use_bf16("yes", small)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native in (True, False):
        monkeypatch.setattr(M, "cpu_has_bf16", lambda native=native: native)
        # auto: only where bf16 is native, and only for a model big enough to gain from it.
        assert M.use_bf16("auto", large) is native
        assert M.use_bf16("auto", small) is False
    with pytest.raises(ForgeError, match="--bf16"):
        run_sft(SFTRunConfig(bf16="maybe"))


def test_sft_in_bf16_trains_float32_weights(export: Path, tmp_path: Path) -> None:
    """bf16 is autocast: the loss still falls and the checkpoint keeps float32 weights."""
    import torch

    from forge.train.model import load_checkpoint

    m = run_sft(_cfg(export, tmp_path / "run", max_steps=4, lr=5e-3, bf16="on"),
                log=lambda *_: None)
    assert m["bf16"] is True and m["config"]["bf16"] == "on"
    assert m["eval_loss_last"] < m["eval_loss_first"]
    model, _ = load_checkpoint(m["checkpoint"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_trl_labels_follow_the_codec_mask(export: Path, tok: Any,
                                          rows: list[list[dict[str, Any]]]) -> None:
    """What TRL actually trains on: labels == ids where the codec's mask is 1, else -100."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from forge.train.model import build_tiny
    from forge.train.sft import tokenize_split

    codec = ChatCodec(tok)
    data = tokenize_split(Dataset.from_dict({"messages": rows[:2]}), codec)
    args = SFTConfig(output_dir=str(export / "trl"), max_steps=1, report_to=[],
                     use_cpu=True, max_length=8192, save_strategy="no", dataset_num_proc=None)
    tr = SFTTrainer(model=build_tiny(tok, "micro"), args=args,
                    train_dataset=Dataset.from_dict(data), processing_class=tok)
    assert tr.train_dataset is not None
    by_ids = {tuple(e["input_ids"]): e["labels"] for e in tr.train_dataset}
    for ids, mask in zip(data["input_ids"], data["assistant_masks"], strict=True):
        labels = by_ids[tuple(ids)]
        assert labels == [i if k else -100 for i, k in zip(ids, mask, strict=True)]


def test_overfit_model_outputs_parse(export: Path, tmp_path: Path) -> None:
    """After overfitting the opening turns of a few samples, greedy turns use the tags in
    order: one parseable <action> that ends the turn (then <|im_end|>), never <ans>."""
    from datasets import DatasetDict, load_from_disk

    from forge.train.model import codec_for, generate_turn, load_checkpoint

    dd = load_from_disk(str(export / "dataset"))
    opening = dd["train"].filter(lambda r: len(r["messages"]) > 2
                                 and has_action(r["messages"][2]["content"]))
    few = opening.select(range(min(4, len(opening))))
    assert len(few) >= 3
    data = tmp_path / "few"
    DatasetDict({"train": few, "validation": few}).save_to_disk(str(data / "dataset"))
    # Train on system + user + the first assistant turn (+ the start of the observation):
    # enough to memorise, a fraction of the cost of whole episodes.
    m = run_sft(_cfg(data, tmp_path / "run", max_steps=100, lr=1e-2, batch_size=4,
                     max_length=384, eval_steps=100, logging_steps=10, max_eval_samples=4),
                log=lambda *_: None)
    assert m["train_loss_last"] < 0.5 * m["train_loss_first"]
    model, tok = load_checkpoint(m["checkpoint"])
    codec = codec_for(m["checkpoint"], tok)
    for msgs in few["messages"]:
        assert msgs[2]["role"] == "assistant" and has_action(msgs[2]["content"])
        ctx, _ = codec.encode(msgs[:2])
        assert len(ctx) + len(codec.encode_message(msgs[2])[0]) <= 384
        out = generate_turn(model, codec, ctx + codec.assistant_prefix(), max_new_tokens=80)
        text = codec.decode_turn(out)
        assert out[-1] == codec.eos_id, text
        assert ANS_OPEN not in text and "</ans>" not in text and "<answer>" not in text
        call, problem = parse_action(text)
        assert problem is None, (problem, text)
        assert isinstance(call, dict) and isinstance(call.get("tool"), str)


def test_bad_input_stops_before_training(export: Path, tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict, load_from_disk

    with pytest.raises(DatasetNotFoundError, match="no exported dataset"):
        run_sft(_cfg(tmp_path / "nowhere", tmp_path / "o"))

    bad = tmp_path / "nomsg"
    DatasetDict({s: Dataset.from_dict({"text": ["x"]}) for s in ("train", "validation")}
                ).save_to_disk(str(bad / "dataset"))
    with pytest.raises(MissingColumnsError, match="messages"):
        run_sft(_cfg(bad, tmp_path / "o"))

    dd = load_from_disk(str(export / "dataset"))
    victim = dd["train"][1]["traj_id"]

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        if row["traj_id"] != victim:
            return {"messages": row["messages"]}
        msgs = [dict(x) for x in row["messages"]]
        k = next(i for i, x in enumerate(msgs) if "</action>" in x["content"])
        msgs[k]["content"] = msgs[k]["content"].replace("</action>", "")
        return {"messages": msgs}

    unbalanced = tmp_path / "unbalanced"
    dd.map(cut).save_to_disk(str(unbalanced / "dataset"))
    with pytest.raises(UnbalancedMarkersError, match=victim):
        run_sft(_cfg(unbalanced, tmp_path / "o"))

    with pytest.raises(ModelPathError, match="no such path"):
        run_sft(_cfg(export, tmp_path / "o", model=str(tmp_path / "no-model")))
    assert not (tmp_path / "o" / "checkpoint").exists()

    from forge.train.cli import main

    assert main(["sft", "--data", str(unbalanced), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.skipif(not os.environ.get("FORGE_TEST_SMOLLM2"),
                    reason="loads the 135M GGUF (~1-2 min on 2 cores); FORGE_TEST_SMOLLM2=1")
def test_smollm2_loads_with_protocol_tokens(tmp_path: Path) -> None:
    import torch

    from forge.train.model import load_checkpoint, load_smollm2, save_checkpoint

    model, tok, _ = load_smollm2()
    codec = ChatCodec(tok)
    for t in SPECIAL_TOKENS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1
    # Added tags start from the pieces of their text, so they differ from each other.
    emb = model.get_input_embeddings().weight
    a, b = (tok.convert_tokens_to_ids(t) for t in ("<ans>", "</ans>"))
    assert not torch.equal(emb[a], emb[b])
    msgs = [{"role": "system", "content": solve_system_prompt()},
            {"role": "user", "content": "List the cells."},
            {"role": "assistant", "content": '<action>{"tool": "list_cells", "args": {}}</action>'}]
    ids, _ = codec.encode(msgs)
    assert ids == tok.encode(codec.render(msgs), add_special_tokens=False)
    save_checkpoint(model, tok, tmp_path / "ck")
    m2, _ = load_checkpoint(tmp_path / "ck")
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(model.eval()(x).logits, m2(x).logits)


def _tag_nll(model: Any, rows: list[tuple[list[int], list[int]]], tag_ids: list[int]) -> float:
    """Mean NLL, under the model's own logits, of the tag tokens where they carry loss."""
    import torch

    tot, n = 0.0, 0
    with torch.no_grad():
        for ids, mask in rows:
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
            for t in range(len(ids) - 1):
                if mask[t + 1] and ids[t + 1] in tag_ids:
                    tot -= float(lp[t, ids[t + 1]])
                    n += 1
    assert n > 0
    return tot / n


def test_fit_token_rows_teaches_fresh_tags(tok: Any, rows: list[list[dict[str, Any]]]) -> None:
    """Tags that start as one shared row (a freshly grown vocabulary) are fitted to the model's
    hidden states: their NLL where the policy must emit them falls, and no other row moves."""
    import torch

    from forge.train.chat import TAGS
    from forge.train.model import build_tiny, fit_token_rows

    torch.manual_seed(0)
    model = build_tiny(tok, "micro")
    codec = ChatCodec(tok)
    enc = codec.encode_many(rows[:12])
    tag_ids = [tok.convert_tokens_to_ids(t) for t in TAGS]
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb[tag_ids] = emb.mean(0)
    before_model = _tag_nll(model, enc, tag_ids)
    others = emb.detach().clone()
    res = fit_token_rows(model, enc, tag_ids, steps=200)
    assert res["tag_positions"] > 0
    assert res["nll_tags_after"] < 0.2 * res["nll_tags_before"]
    assert res["nll_all_after"] < res["nll_all_before"]
    keep = torch.ones(emb.shape[0], dtype=torch.bool)
    keep[tag_ids] = False
    assert torch.equal(emb.detach()[keep], others[keep])
    assert not torch.equal(emb.detach()[tag_ids], others[tag_ids])
    # The rows are written into the model (tied input/output), not only into the fit's copy.
    assert _tag_nll(model, enc, tag_ids) < 0.5 * before_model


REPO = Path(__file__).resolve().parents[1]
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["sft-llama3.1-8b-lora.yaml", "sft-smollm2-135m.yaml"])
def test_real_run_configs_build(name: str, export: Path, tok: Any, tmp_path: Path) -> None:
    """The GPU configs parse into peft/TRL objects and their trainer builds around a tiny
    stand-in with the same module names (Llama), tokenizer grown like the 8B's would be."""
    from datasets import Dataset, load_from_disk
    from transformers import AutoTokenizer

    from forge.train.configs import build_trainer, load_run_config
    from forge.train.model import build_tiny, grow_vocabulary
    from forge.train.sft import tokenize_split

    spec = load_run_config(REPO / "train" / "configs" / name)
    assert spec.forge["data"] and spec.sft["bf16"] is True
    # A stand-in tokenizer without the protocol tokens: they must be added as new ids.
    tok.save_pretrained(str(tmp_path / "tok"))
    base = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert len(base) == len(tok)
    model = build_tiny(base, "micro")
    new_ids = grow_vocabulary(model, base)   # already has them: nothing new
    assert new_ids == []
    codec = ChatCodec(base, compact=bool(spec.forge["compact"]))
    rows = load_from_disk(str(export / "dataset"))["train"].select(range(2))
    ds = Dataset.from_dict(tokenize_split(rows, codec))
    # bf16 is a GPU setting; on this CPU the rest of the config is used as written.
    # As if ChatML's two tokens were new (Llama 3.1): their embedding rows train with LoRA.
    trainer = build_trainer(spec, model, base, ds, ds,
                            new_token_ids=[codec.im_start_id, codec.eos_id],
                            output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True,
                            activation_checkpointing=False)
    n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in trainer.model.parameters())
    if spec.lora:
        names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
        assert 0 < n_train < n_all / 2
        assert any("lora_A" in n for n in names) and any("trainable_tokens" in n for n in names)
        assert trainer.args.learning_rate == spec.sft["learning_rate"]
    else:
        assert n_train == n_all


@pytest.mark.parametrize("name", ["accelerate-1gpu.yaml", "accelerate-8gpu-fsdp.yaml"])
def test_accelerate_configs_parse(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(REPO / "train" / "configs" / name))
    assert cfg.mixed_precision == "bf16"


def test_levels_select_the_samples_of_those_difficulties(export: Path, tmp_path: Path) -> None:
    from datasets import load_from_disk

    from forge.db import ForgeError
    from forge.train.sft import select_samples

    dd = load_from_disk(str(export / "dataset"))
    train = dd["train"]
    have = set(train["difficulty"])
    for lv in sorted(have):
        got = select_samples(train, lv.lower())
        assert len(got) == sum(d == lv for d in train["difficulty"]) and set(
            got["difficulty"]) == {lv}
    assert len(select_samples(train, "")) == len(train)
    missing = sorted({"L1", "L2", "L3"} - have)
    if missing:
        with pytest.raises(ForgeError, match="no sample of those levels and kinds"):
            select_samples(train, missing[0])
    with pytest.raises(ForgeError, match="--levels 'L4'"):
        run_sft(_cfg(export, tmp_path / "o", levels="L4"))
    with pytest.raises(MissingColumnsError, match="difficulty"):
        select_samples(train.remove_columns("difficulty"), "L1")
    qa_l1 = select_samples(train, "L1", "qa")
    assert len(qa_l1) == sum(d == "L1" and k == "qa" for d, k in
                             zip(train["difficulty"], train["kind"], strict=True))
    with pytest.raises(ForgeError, match="--kinds 'answers'"):
        run_sft(_cfg(export, tmp_path / "o", kinds="answers"))


def test_qa_share_subsamples_the_train_kinds_without_duplicates(export: Path,
                                                                tmp_path: Path) -> None:
    from datasets import Dataset, load_from_disk

    from forge.db import ForgeError
    from forge.train.sft import kind_counts, mix_kinds

    train = load_from_disk(str(export / "dataset"))["train"]
    train = train.add_column("row", list(range(len(train))))
    have = kind_counts(train)
    assert set(have) == {"qa", "action"}
    assert mix_kinds(train, 0.0) is train
    for share in (0.25, 0.5, 0.75):
        got = mix_kinds(train, share, seed=2)
        n = kind_counts(got)
        total = n["qa"] + n["action"]
        # As many rows as the scarcer kind allows, at the asked share (to one row).
        assert min(have["qa"] - n["qa"], have["action"] - n["action"]) <= 1
        assert abs(n["qa"] - share * total) <= 1
        assert len(set(got["row"])) == len(got)   # no row twice
    toy = Dataset.from_dict({"kind": ["qa"] * 30 + ["action"] * 10, "i": list(range(40))})
    got = mix_kinds(toy, 0.6, seed=0)
    assert kind_counts(got) == {"action": 10, "qa": 15}
    assert mix_kinds(toy, 0.6, seed=0)["i"] == got["i"]              # seeded
    with pytest.raises(ForgeError, match="a mix needs both"):
        mix_kinds(toy.select(range(30)), 0.5)
    with pytest.raises(MissingColumnsError, match="kind"):
        mix_kinds(toy.remove_columns("kind"), 0.5)
    for bad in ({"qa_share": 1.0}, {"qa_share": 0.5, "kinds": "qa"}):
        with pytest.raises(ForgeError, match="--qa-share"):
            run_sft(_cfg(export, tmp_path / "o", **bad))


def test_copy_drills_quote_the_observation_verbatim(rows: list[list[dict[str, Any]]],
                                                     tok: Any) -> None:
    import re

    from forge.train.drills import copy_drills, quotable_fields

    drills = copy_drills(rows, 40, seed=3)
    assert len(drills) == 40
    codec = ChatCodec(tok, compact=True, short_system=True)
    for d in drills:
        assert [m["role"] for m in d] == ["system", "user", "tool", "assistant"]
        seen = compact_content("tool", d[2]["content"])
        quotes = re.findall(r'Observed ("[A-Za-z_0-9]+":-?[\d.]+)\.', d[3]["content"])
        asked = re.findall(r'"([A-Za-z_0-9]+)"', d[1]["content"])
        assert quotes and len(quotes) == len(asked)
        for q, key in zip(quotes, asked, strict=True):
            assert q.startswith(f'"{key}":')
            # verbatim in what the model reads, and the key only once there: unambiguous
            assert seen.count(f'"{key}":') == 1 and q in seen
        # loss on the quote only: the observation and the request carry none
        ids, mask = codec.encode(d)
        trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
        assert "Observed" in trained and "Quote" not in trained and "ok" not in trained
    # a key that occurs twice (two UEs' rows) is never quoted
    twice = '<ans>{"ok":true,"tool":"x","result":{"a":{"v":1.5},"b":{"v":2.5},"w":3}}</ans>'
    assert quotable_fields(twice) == [("w", "3")]
    assert copy_drills([[{"role": "user", "content": "hi"}]], 5) == []


def test_copy_drills_join_the_train_split_only(export: Path, tmp_path: Path) -> None:
    plain = run_sft(_cfg(export, tmp_path / "a", max_steps=2), log=lambda *_: None)
    drilled = run_sft(_cfg(export, tmp_path / "b", max_steps=2, copy_drills=0.5),
                      log=lambda *_: None)
    assert plain["copy_drills"] == 0 and drilled["copy_drills"] > 0
    assert drilled["train_samples"] == plain["train_samples"] + drilled["copy_drills"]
    assert drilled["eval_samples"] == plain["eval_samples"]


def test_labelled_only_scoring_and_frozen_layers_keep_the_gradient(
        tok: Any, rows: list[list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The two SFT speed options change what is computed, not what is learnt: scoring only the
    labelled positions gives TRL's loss and gradients exactly; freezing the bottom layers stops
    their gradients and leaves the gradients above them unchanged."""
    import torch
    import trl.trainer.utils as tu
    from trl.trainer.utils import add_fused_lm_head

    from forge.train.model import build_tiny, freeze_bottom, score_labelled_positions_only

    monkeypatch.setattr(tu, "_use_triton", tu._use_triton)   # restored after the test
    codec = ChatCodec(tok)
    pairs = [codec.encode(m) for m in rows[:2]]
    n = min(len(i) for i, _ in pairs)
    ids = torch.tensor([i[:n] for i, _ in pairs])
    labels = torch.tensor([[t if k else -100 for t, k in zip(i[:n], m[:n], strict=True)]
                           for i, m in pairs])
    assert 0 < int((labels != -100).sum()) < labels.numel()

    def loss_and_grads(freeze: int = 0) -> tuple[float, dict[str, Any]]:
        torch.manual_seed(0)
        model = build_tiny(tok, "micro")
        add_fused_lm_head(model)
        freeze_bottom(model, freeze)
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return out.loss.item(), {k: p.grad for k, p in model.named_parameters()}

    loss_all, g_all = loss_and_grads()
    score_labelled_positions_only()
    assert tu._use_triton(torch.device("cpu"))
    loss_lab, g_lab = loss_and_grads()
    assert loss_lab == pytest.approx(loss_all, rel=1e-5)
    for k, g in g_all.items():
        torch.testing.assert_close(g_lab[k], g, rtol=1e-4, atol=1e-6)

    _, g_frozen = loss_and_grads(freeze=1)
    for k, g in g_all.items():
        if ".layers.0." in k:
            assert g_frozen[k] is None, k
        elif "embed_tokens" in k:
            # Tied to the LM head: it still trains, through the head only.
            assert g_frozen[k] is not None and not torch.equal(g_frozen[k], g)
        else:
            torch.testing.assert_close(g_frozen[k], g, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="cannot freeze 2 of 2"):
        freeze_bottom(build_tiny(tok, "micro"), 2)
