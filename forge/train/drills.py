"""Copy drills: extra SFT conversations that teach a small model to carry a value across.

The L1-question models of issue 10 pick the right tool, the right entity and even the right
field (`Observed "dl_throughput_mbps":...` in 98 of 100 quotes), then write a value that is not
the observation's (right in 19 of 100). Copying a number from ~100 tokens back is an
induction-head skill, and a question sample trains it on only one quote of a few digits.

A drill is built from the train split's own observations and gives that skill dense
supervision:

    system     the sample's own system message
    user       Quote "sinr_db", "delay_ms" and "cqi" from the next observation.
    tool       <ans>{...the sample's observation...}</ans>
    assistant  Observed "sinr_db":12.41. Observed "delay_ms":48.2. Observed "cqi":9.

The keys are asked in random order (finding a key by content, not position) and only keys that
occur once in the observation's compact rendering (`forge.train.chat.compact_content`, what the
model sees) with a number right after them, so the quote is unambiguous and appears verbatim in
the observation. As everywhere in SFT only the assistant turn carries loss. Drills never touch
the validation split, so held-out loss stays a loss on real episodes.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from forge.train.chat import compact_content

# "key":number in compact JSON (compact_value rounds floats to 3 decimals).
_FIELD = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)":(-?\d+(?:\.\d+)?)(?=[,}\]])')
_KEY = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)":')


def quotable_fields(tool_content: str) -> list[tuple[str, str]]:
    """(key, value text) of every numeric field whose key occurs once in the compact
    rendering of an observation, in order of appearance."""
    body = compact_content("tool", tool_content)
    once = {k for k, n in Counter(_KEY.findall(body)).items() if n == 1}
    return [(k, v) for k, v in _FIELD.findall(body) if k in once]


def _ask(keys: Sequence[str]) -> str:
    names = [f'"{k}"' for k in keys]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"Quote {listed} from the next observation."


def copy_drills(conversations: Sequence[Sequence[dict[str, Any]]], n: int, seed: int = 0,
                max_quotes: int = 4) -> list[list[dict[str, Any]]]:
    """`n` drill conversations from the tool observations of `conversations` (fewer when
    they hold no quotable observation)."""
    rng = random.Random(seed)
    pool: list[tuple[dict[str, Any] | None, str, list[tuple[str, str]]]] = []
    for conv in conversations:
        system = next((dict(m) for m in conv if m.get("role") == "system"), None)
        for m in conv:
            if m.get("role") == "tool":
                fields = quotable_fields(m.get("content") or "")
                if fields:
                    pool.append((system, m["content"], fields))
    if not pool or n <= 0:
        return []
    out = []
    for _ in range(n):
        system, content, fields = rng.choice(pool)
        chosen = rng.sample(fields, min(len(fields), rng.randint(1, max_quotes)))
        msgs: list[dict[str, Any]] = [system] if system else []
        msgs += [{"role": "user", "content": _ask([k for k, _ in chosen])},
                 {"role": "tool", "content": content},
                 {"role": "assistant",
                  "content": " ".join(f'Observed "{k}":{v}.' for k, v in chosen)}]
        out.append(msgs)
    return out
