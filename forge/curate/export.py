"""Export a curated set for training: a `datasets.DatasetDict` on disk, Parquet files and a
dataset card, in TRL's conversational format.

Two renderings (`--format`):

* `text` (default, NetGPT): messages exactly as stored, `<action>{...}</action>` ending assistant
  turns and `<ans>{...}</ans>` as the content of `tool` turns.
* `tools` (native tool calling, as TRL documents for tool-calling SFT): the system prompt loses
  its sentences about the tag protocol (`tool_calling_system`), the `<action>` becomes
  the assistant message's `tool_calls` ([{id, type: "function", function: {name, arguments}}],
  `arguments` an object stored with datasets' `Json` feature so that every tool's arguments
  round-trip exactly instead of being merged into one Arrow struct), the `<ans>`
  payload becomes the `tool` message's content (with `name` and `tool_call_id`), and a `tools`
  column holds the JSON schemas of the catalogue (schemas/tools.openai.json) as a JSON string,
  which TRL's SFTTrainer parses (`json.loads`) before applying the chat template.

Layout of `--out DIR`: `dataset/` (load_from_disk), `parquet/{train,validation,test}.parquet`,
`parquet/rl_prompts.parquet`, `README.md` (the card), `curation.json` (options + stats).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import duckdb

from forge.curate.config import SPLITS, CurateConfig, CurateError
from forge.gym.catalogue import CONFIGURE_TOOLS, TOOLS
from forge.gym.tags import ANS_CLOSE, ANS_OPEN, parse_action, parse_ans
from forge.teacher.base import estimate_tokens
from forge.teacher.prompts import CRITERION_HEAD


class ExportError(CurateError):
    """A stored trajectory cannot be rendered in the requested format."""


TOOL_CALLING_NOTE = ("Call at most one tool per turn; each result comes back as a tool "
                     "message.")


def tool_calling_system(content: str) -> str:
    """The system prompt for native tool calling: the sentences that describe the text
    protocol (<action>/<ans>) are dropped and one sentence about tool messages is added."""
    sentences = re.split(r"(?<=[.!?])\s+", content.strip())
    kept = [x for x in sentences if "<action>" not in x and "<ans>" not in x]
    return " ".join([*kept, TOOL_CALLING_NOTE]) if len(kept) < len(sentences) else content


def shows_goal_json(traj_id: str, share: float) -> bool:
    """Whether an action sample keeps its goal JSON: a fixed pseudo-random draw per trajectory
    id, so a rebuild (or another format) makes the same choice."""
    u = int(hashlib.sha256(traj_id.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return u < share


def without_criterion(content: str) -> str:
    """The user message without its "Success criterion ..." paragraph (the natural-language
    ticket alone)."""
    head = content.find("\n\n" + CRITERION_HEAD)
    return content if head < 0 else content[:head].rstrip()


def to_tool_calling(messages: list[dict[str, Any]], traj_id: str = "") -> list[dict[str, Any]]:
    """NetGPT tags -> native tool calling (assistant tool_calls, tool messages with name/id)."""
    out: list[dict[str, Any]] = []
    pending: tuple[str, str] | None = None
    for k, m in enumerate(messages):
        role, content = m["role"], m["content"]
        if role == "assistant" and "<action>" in content:
            call, problem = parse_action(content)
            if problem or not isinstance(call, dict) or "tool" not in call:
                raise ExportError(f"trajectory {traj_id}: message {k} has an unparseable "
                                  f"<action> ({problem.message if problem else 'no tool'})")
            cid = f"call_{k}"
            pending = (str(call["tool"]), cid)
            out.append({"role": "assistant",
                        "content": content[:content.index("<action>")].strip(),
                        "tool_calls": [{"id": cid, "type": "function", "function": {
                            "name": str(call["tool"]),
                            "arguments": call.get("args", {})}}],
                        "name": None, "tool_call_id": None})
        elif role == "tool":
            obs, problem = parse_ans(content)
            body = (json.dumps(obs, separators=(", ", ": ")) if problem is None else
                    content.strip().removeprefix(ANS_OPEN).removesuffix(ANS_CLOSE))
            name, cid = pending or ("", "")
            out.append({"role": "tool", "content": body, "tool_calls": None, "name": name,
                        "tool_call_id": cid})
            pending = None
        else:
            if role == "system":
                content = tool_calling_system(content)
            out.append({"role": role, "content": content, "tool_calls": None, "name": None,
                        "tool_call_id": None})
    return out


MEMBERS_SQL = """
SELECT m.split, m.position, m.traj_id, m.task_id, m.kind, m.difficulty, m.family,
       m.primary_tool, m.error_recovery, m.n_actions, m.tools, m.teacher, m.model_hash,
       json_extract(j.trajectory, '$.messages')::VARCHAR AS messages
FROM curated_members m JOIN trajectories j USING (traj_id)
WHERE m.set_name = ? ORDER BY m.split, m.position
"""

RL_SQL = """
WITH rep AS (   -- one stored trajectory per task, for its system prompt and task object
    SELECT j.task_id, min(j.traj_id) AS traj_id FROM trajectories j
    JOIN curated_rl_prompts r ON r.task_id = j.task_id AND r.set_name = $1
    WHERE j.trajectory IS NOT NULL GROUP BY j.task_id)
SELECT r.split, r.task_id, r.kind, r.difficulty, r.family, r.scenario_id, r.seed,
       r.instruction,
       json_extract(j.trajectory, '$.messages[0]')::VARCHAR AS system_message,
       json_extract(j.trajectory, '$.task')::VARCHAR AS task
FROM curated_rl_prompts r
JOIN rep USING (task_id)
JOIN trajectories j ON j.traj_id = rep.traj_id
WHERE r.set_name = $1 ORDER BY r.split, r.task_id
"""


def _rows(con: duckdb.DuckDBPyConnection, sql: str, name: str) -> list[dict[str, Any]]:
    cur = con.execute(sql, [name])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def build_datasets(con: duckdb.DuckDBPyConnection, name: str, fmt: str,
                   tools_column: str = "all", goal_json_share: float = 1.0) -> Any:
    """(DatasetDict of the SFT splits, Dataset of RL prompts) for set `name`. Action samples
    keep the goal JSON in their user message with probability `goal_json_share`."""
    from datasets import Dataset, DatasetDict

    from forge.gym.catalogue import openai_tools

    catalogue = openai_tools()
    tools_json = json.dumps(catalogue, separators=(",", ":"))
    per_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for r in _rows(con, MEMBERS_SQL, name):
        msgs = json.loads(r.pop("messages"))
        msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
        if r["kind"] == "action" and not shows_goal_json(r["traj_id"], goal_json_share):
            msgs = [{**m, "content": without_criterion(m["content"])} if m["role"] == "user"
                    else m for m in msgs]
        if fmt == "tools":
            msgs = to_tool_calling(msgs, r["traj_id"])
        row = {"messages": msgs, **{k: v for k, v in r.items() if k not in ("split",
                                                                             "position")}}
        row["tools_called"] = row.pop("tools")
        if fmt == "tools":
            called = set(row["tools_called"])
            row["tools"] = tools_json if tools_column == "all" else json.dumps(
                [t for t in catalogue if t["function"]["name"] in called],
                separators=(",", ":"))
        per_split[r["split"]].append(row)
    feats = _features(fmt, per_split)
    dd = DatasetDict({s: Dataset.from_list(rows, features=feats) for s, rows in
                      per_split.items()})
    rl = []
    for r in _rows(con, RL_SQL, name):
        system = json.loads(r.pop("system_message") or "null")
        prompt = ([{"role": "system", "content": system["content"]}]
                  if system and system.get("role") == "system" else [])
        prompt.append({"role": "user", "content": r["instruction"]})
        rl.append({"prompt": prompt, **r})
    return dd, Dataset.from_list(rl) if rl else None


def _features(fmt: str, per_split: dict[str, list[dict[str, Any]]]) -> Any:
    """Explicit features, so that every split (even an empty one) has the same schema."""
    from datasets import Features, Json, List, Value

    msg: dict[str, Any] = {"role": Value("string"), "content": Value("string")}
    if fmt == "tools":
        msg.update({"tool_calls": List({"id": Value("string"), "type": Value("string"),
                                        "function": {"name": Value("string"),
                                                     "arguments": Json()}}),
                    "name": Value("string"), "tool_call_id": Value("string")})
    f: dict[str, Any] = {"messages": List(msg)}
    for col, typ in (("traj_id", "string"), ("task_id", "string"), ("kind", "string"),
                     ("difficulty", "string"), ("family", "string"),
                     ("primary_tool", "string"), ("error_recovery", "bool"),
                     ("n_actions", "int32"), ("teacher", "string"), ("model_hash", "string")):
        f[col] = Value(typ)
    f["tools_called"] = List(Value("string"))
    if fmt == "tools":
        f["tools"] = Value("string")
    return Features(f)


def write_export(con: duckdb.DuckDBPyConnection, cfg: CurateConfig, out_dir: Path,
                 card: str, info: dict[str, Any], staging: str | None = None) -> Path:
    """Build the export of set `staging` (default: the set's name) in a sibling temporary
    directory and return it; the caller renames it over `out_dir` once the tables are swapped,
    so an interrupted run leaves the previous export in place."""
    import datasets

    datasets.disable_progress_bars()   # the curation display reports the export itself
    dd, rl = build_datasets(con, staging or cfg.set_name, cfg.format, cfg.tools_column,
                            cfg.goal_json_share)
    # The card ends with the statistics of what was exported (every split together).
    stats = data_stats([{"kind": r["kind"], "difficulty": r["difficulty"],
                         "error_recovery": r["error_recovery"], "messages": r["messages"]}
                        for split in dd.values() for r in split])
    stats["goal_json_share"] = cfg.goal_json_share
    info = {**info, "data_stats": stats}
    card = card + "\n" + stats_markdown(stats)
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "parquet").mkdir(parents=True)
    dd.save_to_disk(str(tmp / "dataset"))
    for split, ds in dd.items():
        ds.to_parquet(str(tmp / "parquet" / f"{split}.parquet"))
    if rl is not None:
        rl.to_parquet(str(tmp / "parquet" / "rl_prompts.parquet"))
        rl.save_to_disk(str(tmp / "rl_prompts"))
    (tmp / "README.md").write_text(card)
    (tmp / "curation.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    return tmp


def push_to_hub(out_dir: Path, repo: str) -> None:
    """Push the exported DatasetDict and its card to the Hugging Face Hub (needs a token)."""
    from datasets import load_from_disk
    from huggingface_hub import HfApi

    load_from_disk(str(out_dir / "dataset")).push_to_hub(repo)
    HfApi().upload_file(path_or_fileobj=str(out_dir / "README.md"), path_in_repo="README.md",
                        repo_id=repo, repo_type="dataset")


def dataset_card(cfg: CurateConfig, info: dict[str, Any]) -> str:
    """The README of the exported set: counts, balance, dedup thresholds, provenance, command."""
    st = info["stages"]
    lines = [
        "---", "tags: [forge, mobile-networks, tool-use, agents, sft]",
        f"pretty_name: {cfg.set_name}", "---", "",
        f"# {cfg.set_name}", "",
        "Tool-use trajectories of an LTE network operator agent, produced by forge "
        "(ns-3 runs -> learned Experiment Model -> network gym -> teacher synthesis -> "
        "verification -> this curation). Every trajectory's observations were produced by the "
        "gym and every trajectory passed the verifiers.", "",
        "## Command", "", "```", info["command"], "```", "",
        f"Set hash `{info['set_hash']}` (pool fingerprint `{info['pool_hash']}` + options); the "
        "same pool and options rebuild the same set.", "",
        "## Counts", "", "| split | samples |", "|---|---|",
        *[f"| {s} | {info['splits'].get(s, 0)} |" for s in SPLITS],
        f"| RL prompts (tasks, no trajectories) | {info['n_rl_prompts']} |", "",
        f"Target {cfg.target}; pool {info['pool_rows']} trajectories.", "",
        "## Stages", "", "| stage | in | dropped | out | seconds |", "|---|---|---|---|---|",
        *[f"| {s['stage']} | {s['in']} | {s['dropped']} | {s['out']} | {s['seconds']:.1f} |"
          for s in st], "",
        "## Dedup thresholds", "",
        "- exact: md5 of normalised instruction + messages",
        f"- near-dup instructions: MinHash LSH, word 3-grams, Jaccard >= "
        f"{cfg.near_instruction_threshold}, {cfg.num_perm} permutations, scope "
        f"{cfg.dedup_scope}",
        f"- near-dup trajectories: Jaccard >= {cfg.near_trajectory_threshold} (global)",
        f"- semantic (SemDeDup on instructions): cosine >= {cfg.semantic_threshold}, backend "
        f"{cfg.embed_backend}, model `{info['embedding_model']}`, max {cfg.max_seq_length} "
        f"tokens, groups: "
        + ("one per scenario" if cfg.dedup_scope == "scenario" else
           f"k-means, ~{cfg.semantic_cluster_size} per cluster"), "",
        "## Balance (requested vs achieved)", "",
        "| dimension | bucket | requested | cap | available | achieved | short | filled from |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {b['dimension']} | {b['bucket']} | {_nz(b['requested'])} | {_nz(b['cap'])} | "
          f"{b['available']} | {b['achieved']} | {b['short']} | {b['filled_from'] or ''} |"
          for b in info["balance"]], "",
        *([f"- {m}" for m in info["balance_messages"]] + [""] if info["balance_messages"]
          else []),
        "## Provenance", "",
        f"- teacher(s): {', '.join(info['teachers']) or 'n/a'}",
        f"- Experiment Model hash(es): {', '.join(info['model_hashes']) or 'n/a'}",
        f"- format: `{cfg.format}` "
        + ("(NetGPT text: `<action>`/`<ans>` in message content)" if cfg.format == "text" else
           "(native tool calling: `tool_calls`, `tool` messages, `tools` column)"), "",
        "## Splits", "",
        "Train/validation/test are split by scenario group (connected components of scenario "
        "seed and near-duplicate cluster), so no test scenario is in train, and the dedup "
        "stages leave no near-duplicate pair among the samples"
        + (" of a scenario (the same wording about another network is another task)"
           if cfg.dedup_scope == "scenario" else "")
        + ". The RL prompt set holds the distinct tasks of the deduplicated pool with the split "
        "of their group.",
        "",
        "## Load", "", "```python", "from datasets import load_from_disk",
        f"ds = load_from_disk('{info['export_dir']}/dataset')", "```", "",
    ]
    return "\n".join(lines)


def _nz(v: Any) -> str:
    return "" if v is None else str(v)


# --- data statistics (the dataset card and benchmarks/bench_data_stats.py) ----------------------
TOOL_NAMES = tuple(t.name for t in TOOLS)


def calls_of(messages: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(tool, canonical args JSON, ok) for every action of a trajectory, in order (text or
    tool-calling rendering)."""
    out: list[tuple[str, str, bool]] = []
    for m in messages:
        if m["role"] == "assistant":
            call: Any = None
            if m.get("tool_calls"):
                f = m["tool_calls"][0]["function"]
                call = {"tool": f["name"], "args": f["arguments"]}
            elif "<action>" in (m.get("content") or ""):
                call, problem = parse_action(m["content"])
                call = None if problem else call
            if isinstance(call, dict):
                out.append((str(call.get("tool")),
                            json.dumps(call.get("args") or {}, sort_keys=True), True))
        elif m["role"] == "tool" and out:
            c = m.get("content") or ""
            obs, problem = parse_ans(c)
            if problem is not None:  # tool-calling rendering: plain JSON content
                try:
                    obs = json.loads(c)
                except ValueError:
                    obs = None
            ok = isinstance(obs, dict) and obs.get("ok") is not False
            t, a, _ = out[-1]
            out[-1] = (t, a, ok)
    return out


def applied_fixes(calls: list[tuple[str, str, bool]]) -> list[str]:
    """The configure tools whose change is still in place at the end (a rolled-back probe is
    not a fix)."""
    stack: list[str] = []
    for tool, _, ok in calls:
        if not ok or tool not in CONFIGURE_TOOLS:
            continue
        if tool == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(tool)
    return stack


def redundant_calls(calls: list[tuple[str, str, bool]]) -> int:
    """Calls identical (tool and arguments) to the successful call just before them: nothing
    changed in between, so the second one can only repeat the first."""
    return sum(1 for prev, cur in itertools.pairwise(calls)
               if prev[2] and prev[:2] == cur[:2])


def _pct(n: float, d: float) -> float:
    return round(100.0 * n / d, 2) if d else 0.0


def data_stats(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Tool coverage, applied-fix shares, difficulty mix (all, action, qa), qa vs action,
    redundant-call rate, error-recovery share and tokens per sample (~4 characters per token)
    of samples with `kind`, `difficulty`, `error_recovery` and `messages`."""
    n = len(samples)
    by_kind: dict[str, int] = {}
    mix: dict[str, dict[str, int]] = {"all": {}, "action": {}, "qa": {}}
    used = dict.fromkeys(TOOL_NAMES, 0)
    fixes = {t: 0 for t in CONFIGURE_TOOLS if t != "rollback"}
    n_calls = n_red = traj_red = n_rec = 0
    tokens: list[int] = []
    for s in samples:
        k, d = s["kind"], s["difficulty"]
        by_kind[k] = by_kind.get(k, 0) + 1
        for key in ("all", k):
            mix.setdefault(key, {})
            mix[key][d] = mix[key].get(d, 0) + 1
        calls = calls_of(s["messages"])
        for t in {c[0] for c in calls} & used.keys():
            used[t] += 1
        for t in set(applied_fixes(calls)) & fixes.keys():
            fixes[t] += 1
        r = redundant_calls(calls)
        n_calls += len(calls)
        n_red += r
        traj_red += r > 0
        n_rec += bool(s["error_recovery"])
        tokens.append(sum(estimate_tokens(m.get("content") or "") for m in s["messages"]))
    tokens.sort()
    n_action = by_kind.get("action", 0)
    return {
        "samples": n, "kinds": by_kind,
        "difficulty_pct": {key: {d: _pct(c.get(d, 0), sum(c.values()))
                                 for d in ("L1", "L2", "L3")} for key, c in mix.items()},
        "difficulty_counts": mix,
        "tool_coverage_pct": {t: _pct(c, n) for t, c in used.items()},
        "tools_below_1pct": sorted(t for t, c in used.items() if _pct(c, n) < 1.0),
        "fix_share_pct": {t: _pct(c, n) for t, c in fixes.items()},
        "fix_share_of_action_pct": {t: _pct(c, n_action) for t, c in fixes.items()},
        "redundant_call_pct_of_calls": _pct(n_red, n_calls),
        "redundant_call_pct_of_samples": _pct(traj_red, n),
        "error_recovery_pct": _pct(n_rec, n),
        "tokens_mean": round(sum(tokens) / n, 1) if n else 0.0,
        "tokens_p95": tokens[min(n - 1, int(0.95 * n))] if n else 0,
        "calls": n_calls,
    }


def stats_markdown(st: dict[str, Any]) -> str:
    """The statistics as a card section."""
    dp = st["difficulty_pct"]
    lines = ["## Data statistics", "",
             f"{st['samples']} samples: " + ", ".join(f"{k} {v}" for k, v in
                                                     sorted(st["kinds"].items())) + ".", "",
             "| difficulty | L1 % | L2 % | L3 % |", "|---|---|---|---|",
             *[f"| {key} | {dp[key]['L1']} | {dp[key]['L2']} | {dp[key]['L3']} |"
               for key in ("all", "action", "qa") if key in dp], "",
             f"- redundant calls (identical to the successful call just before): "
             f"{st['redundant_call_pct_of_calls']} % of {st['calls']} calls, in "
             f"{st['redundant_call_pct_of_samples']} % of samples",
             f"- error recovery (a failed call, then a recovered one): "
             f"{st['error_recovery_pct']} % of samples",
             f"- tokens per sample (~4 characters per token): mean {st['tokens_mean']}, "
             f"p95 {st['tokens_p95']}"]
    if "goal_json_share" in st:
        lines.append(f"- action samples showing the goal JSON: about "
                     f"{round(100 * st['goal_json_share'])} % (the rest: the ticket only)")
    lines += ["", "| tool | samples using it % | applied fix % |", "|---|---|---|",
              *[f"| {t} | {p} | {st['fix_share_pct'].get(t, '')} |"
                for t, p in st["tool_coverage_pct"].items()], ""]
    return "\n".join(lines)
