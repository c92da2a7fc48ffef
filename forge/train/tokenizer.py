"""A small byte-level BPE trained on the rendered training conversations (nothing downloaded).

The codec's special tokens (`forge.train.chat.SPECIAL_TOKENS`: pad, `<|im_start|>`,
`<|im_end|>` and the six protocol tags) get ids 0..8 and are never split or merged into. Digits
are split one per token before BPE: numbers are most of an observation's text and what a final
answer must quote, and a tiny model copies and compares digit sequences more reliably than
whatever multi-digit chunks BPE would pick.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from forge.train.chat import IM_END, IM_START, PAD, SPECIAL_TOKENS, TAGS

# A plain ChatML template so that `apply_chat_template` (and tools that use it) frame
# conversations like the codec does; the codec itself does not use it.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096,
                    individual_digits: bool = True) -> Any:
    """A `PreTrainedTokenizerFast` trained on `texts` (rendered ChatML conversations)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  byte_level])
                         if individual_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, bos_token=None, unk_token=None,
        extra_special_tokens=[IM_START, *TAGS], chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False)


__all__ = ["CHATML_TEMPLATE", "train_tokenizer"]
