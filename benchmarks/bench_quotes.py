"""Do a trained model's question answers copy the value they quote? (issue 10)

    python benchmarks/bench_quotes.py --db build/train/s7-drill/bench.duckdb [--agent SUBSTR]

For every bench run in `--db` (agents matching `--agent`), over its episodes of `--levels`
(default L1) and `--kinds` (default qa), one per task: the final turn's `Observed "key":value`
quotes (the form the offline teacher's answers open with), whether the key is in the last
observation the model read (its compact rendering, what the model sees), and whether the value
written after it is the observation's. Also the `<answer>` against the quoted value, and success.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

QUOTE = re.compile(r'Observed ("[A-Za-z_][A-Za-z0-9_]*"):("[^"]*"|-?\d+(?:\.\d+)?|true|false)')
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def quote_stats(episodes: list[tuple[bool, list[dict[str, Any]]]]) -> dict[str, Any]:
    from forge.train.chat import compact_content

    n = quoting = key_in = copied = answer_is_quote = ok = 0
    for success, msgs in episodes:
        n += 1
        ok += success
        final = next((m for m in reversed(msgs) if m.get("role") == "assistant"), None)
        obs = next((m for m in reversed(msgs) if m.get("role") == "tool"), None)
        if final is None or obs is None:
            continue
        quotes = QUOTE.findall(final.get("content") or "")
        if not quotes:
            continue
        quoting += 1
        body = compact_content("tool", obs.get("content") or "")
        key, value = quotes[0]
        if f"{key}:" in body:
            key_in += 1
            copied += f"{key}:{value}" in body
        ans = ANSWER.search(final.get("content") or "")
        answer_is_quote += bool(ans) and ans.group(1).strip() == value.strip('"')
    return {"episodes": n, "success": ok, "quote_a_field": quoting, "key_in_observation": key_in,
            "value_copied": copied, "answer_equals_quote": answer_is_quote}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", required=True, help="a bench store (forge bench --db)")
    ap.add_argument("--agent", default="", help="only agents whose spec contains this")
    ap.add_argument("--levels", default="L1")
    ap.add_argument("--kinds", default="qa")
    a = ap.parse_args()
    import duckdb

    con = duckdb.connect(a.db, read_only=True)
    levels, kinds = a.levels.split(","), a.kinds.split(",")
    runs = con.execute("SELECT bench_run_id, agent FROM bench_runs WHERE agent LIKE ? "
                       "ORDER BY started_at", [f"%{a.agent}%"]).fetchall()
    out = {}
    print(f"{'agent':<48}{'tasks':>6}{'solved':>7}{'quote':>7}{'key in obs':>11}"
          f"{'value copied':>13}{'answer=quote':>13}")
    for rid, agent in runs:
        rows = con.execute(
            "SELECT any_value(success), any_value(messages) FROM bench_episodes "
            "WHERE bench_run_id = ? AND difficulty IN (SELECT unnest(?)) "
            "AND kind IN (SELECT unnest(?)) AND trial = 0 GROUP BY task_id",
            [rid, levels, kinds]).fetchall()
        s = quote_stats([(bool(ok), json.loads(m)) for ok, m in rows])
        out[agent] = s
        print(f"{agent[-48:]:<48}{s['episodes']:>6}{s['success']:>7}{s['quote_a_field']:>7}"
              f"{s['key_in_observation']:>11}{s['value_copied']:>13}"
              f"{s['answer_equals_quote']:>13}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
