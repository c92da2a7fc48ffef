"""The pool as curation sees it: one row per trajectory, with the columns the stages read.

Everything is loaded by one SQL query over the 0002 tables (trajectories x tasks x scenarios);
the text the dedup stages compare is built in SQL too, so what a stage compared is reproducible
with a query (see docs/curation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from forge.curate.minhash import normalise_sql
from forge.gym.catalogue import CONFIGURE_TOOLS

# Tool observations are truncated in the whole-trajectory near-dup text: they are a function of
# (scenario, actions) and their numbers carry measurement noise, so their first characters (tool,
# ok/error, first fields) say what happened and the rest only adds shingling cost.
TOOL_CHARS = 160

POOL_SQL = f"""
SELECT j.traj_id, j.task_id, j.status, j.kind, j.difficulty, j.n_actions, j.n_failed_steps,
       j.tools, j.error_recovery, j.uncertain,
       coalesce(j.reject_stage, '') AS reject_stage, coalesce(j.reject_reason, '') AS reject_reason,
       j.teacher, j.model_hash, t.instruction, t.family, t.scenario_id,
       coalesce(s.seed, hash(t.scenario_id)::BIGINT & 9007199254740991) AS seed,
       j.trajectory IS NULL AS unparseable,
       -- exact-dedup key: normalised instruction + every message (roles and contents)
       md5({normalise_sql("t.instruction")} || chr(1) ||
           regexp_replace(lower(coalesce(json_extract(j.trajectory, '$.messages')::VARCHAR, '')),
                          '\\s+', ' ', 'g')) AS content_hash,
       -- whole-trajectory near-dup text: user and assistant turns, tool turns truncated
       array_to_string(list_transform(
           list_filter(
               list_zip(json_extract_string(j.trajectory, '$.messages[*].role'),
                        json_extract_string(j.trajectory, '$.messages[*].content')),
               m -> m[1] <> 'system'),
           m -> CASE WHEN m[1] = 'tool' THEN left(m[2], {TOOL_CHARS}) ELSE m[2] END),
           ' ') AS traj_text
FROM trajectories j
JOIN tasks t USING (task_id)
LEFT JOIN scenarios s ON s.scenario_id = t.scenario_id
ORDER BY j.traj_id
"""

FINGERPRINT_SQL = """
SELECT count(*), coalesce(bit_xor(hash(j.traj_id, j.status, j.trajectory::VARCHAR, t.instruction,
                                       t.family, t.kind, coalesce(s.seed, 0))), 0)
FROM trajectories j JOIN tasks t USING (task_id)
LEFT JOIN scenarios s ON s.scenario_id = t.scenario_id
"""


def fingerprint(con: duckdb.DuckDBPyConnection) -> tuple[int, str]:
    row = con.execute(FINGERPRINT_SQL).fetchone()
    assert row is not None
    return int(row[0]), f"{int(row[0])}-{int(row[1]):016x}"


def primary_tool(tools: list[str]) -> str:
    """The tool bucket of a sample for the per-tool cap: the first configure tool it called (the
    fix it applied), else the last tool it called (what a question was answered from)."""
    for t in tools:
        if t in CONFIGURE_TOOLS:
            return t
    return tools[-1] if tools else "none"


@dataclass
class Pool:
    traj_id: list[str]
    task_id: list[str]
    status: list[str]
    kind: list[str]
    difficulty: list[str]
    n_actions: np.ndarray
    n_failed: np.ndarray
    tools: list[list[str]]
    error_recovery: np.ndarray
    uncertain: np.ndarray
    reject_stage: list[str]
    reject_reason: list[str]
    teacher: list[str]
    model_hash: list[str]
    instruction: list[str]
    family: list[str]
    scenario_id: list[str]
    seed: np.ndarray
    unparseable: np.ndarray
    content_hash: list[str]
    traj_text: list[str]
    primary_tool: list[str]
    rank: np.ndarray  # quality rank: lower is better (the member a cluster keeps)

    def __len__(self) -> int:
        return len(self.traj_id)

    def embed_text(self, i: int) -> str:
        """What the semantic stage embeds: the instruction (SemDeDup on the prompt; the
        solutions were compared lexically by the whole-trajectory stage)."""
        return self.instruction[i]


def load_pool(con: duckdb.DuckDBPyConnection) -> Pool:
    cols = con.execute(POOL_SQL).to_arrow_table().to_pydict()
    n = len(cols["traj_id"])
    tools = [list(t or []) for t in cols["tools"]]
    uncertain = np.asarray(cols["uncertain"], dtype=bool)
    n_actions = np.asarray(cols["n_actions"], dtype=np.int64)
    n_failed = np.asarray(cols["n_failed_steps"], dtype=np.int64)
    # "Better member" order: verified, then not uncertain, then fewer steps, then fewer failed
    # steps, then the id (so ties break the same way on every run).
    verified = np.asarray([s == "verified" for s in cols["status"]], dtype=bool)
    order = np.lexsort((np.arange(n), n_failed, n_actions, uncertain, ~verified))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return Pool(
        traj_id=cols["traj_id"], task_id=cols["task_id"], status=cols["status"],
        kind=cols["kind"], difficulty=cols["difficulty"], n_actions=n_actions, n_failed=n_failed,
        tools=tools, error_recovery=np.asarray(cols["error_recovery"], dtype=bool),
        uncertain=uncertain, reject_stage=cols["reject_stage"],
        reject_reason=cols["reject_reason"], teacher=cols["teacher"],
        model_hash=cols["model_hash"], instruction=cols["instruction"], family=cols["family"],
        scenario_id=cols["scenario_id"], seed=np.asarray(cols["seed"], dtype=np.int64),
        unparseable=np.asarray(cols["unparseable"], dtype=bool),
        content_hash=cols["content_hash"], traj_text=[t or "" for t in cols["traj_text"]],
        primary_tool=[primary_tool(t) for t in tools], rank=rank)
