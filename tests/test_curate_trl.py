"""The exported set loads with `datasets.load_from_disk` and TRL's SFTTrainer trains on it.

No download: a 2-layer Qwen2 (hidden 64) built from a config, a byte-level BPE tokenizer trained
here on the dataset's own text, and TRL's Qwen2.5 training chat template (with
{% generation %} markers, so `assistant_only_loss=True` can mask everything but the assistant
turns). Two optimizer steps per rendering on CPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from forge import db as forge_db
from forge.curate import CurateConfig, run
from forge.curate.fixtures import insert_pool, pool_rows, with_error_recovery
from forge.gym.closed_form import ClosedFormModel
from forge.gym.scripted import generate

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _tokenizer(texts: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    import trl

    template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5_training.jinja").read_text()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=template)


def _texts(ds: Any) -> list[str]:
    out = []
    for row in ds:
        for m in row["messages"]:
            out.append(m["content"] or "")
            for c in m.get("tool_calls") or []:
                out.append(json.dumps(c["function"]))
        if row.get("tools"):
            out.append(row["tools"])
    return out


@pytest.mark.parametrize("fmt", ["text", "tools"])
def test_sft_trainer_accepts_export(fmt: str, tmp_path: Path) -> None:
    from datasets import load_from_disk
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    m = ClosedFormModel()
    trs = generate(24, m, seed=21)
    trs = [with_error_recovery(t, m) if i % 5 == 0 else t for i, t in enumerate(trs)]
    con = forge_db.connect(":memory:")
    insert_pool(con, [pool_rows(t) for t in trs])
    out = tmp_path / "set"
    # tools_column="called": the full catalogue is ~5k tokens of schemas per sample, too long
    # for a CPU test; the rendering is otherwise the same.
    run(CurateConfig(target=12, format=fmt, tools_column="called", out=str(out),
                     max_tool_share=1.0,
                     max_family_share=1.0, splits="80/10/10", quiet=True), con=con, argv=[])
    dd = load_from_disk(str(out / "dataset"))
    train = dd["train"]
    assert len(train) >= 8

    tok = _tokenizer(_texts(train))
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    args = SFTConfig(output_dir=str(tmp_path / "run"), max_steps=2,
                     per_device_train_batch_size=2, learning_rate=1e-3,
                     assistant_only_loss=True, max_length=4096, report_to=[],
                     save_strategy="no", logging_steps=1, use_cpu=True, seed=0,
                     dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tok)
    # The assistant mask is not empty and not everything: only assistant turns carry loss.
    prepared = trainer.train_dataset
    assert prepared is not None
    ex = prepared[0]
    scored = sum(1 for t in ex["labels"] if t != -100)
    assert 0 < scored < len(ex["input_ids"]) / 2
    if fmt == "tools":
        rendered = tok.decode(ex["input_ids"])
        assert "<tool_call>" in rendered and "# Tools" in rendered
    result = trainer.train()
    assert math.isfinite(result.training_loss) and result.global_step == 2
