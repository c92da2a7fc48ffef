-- 6G-Forge synthesis (forge.synth, issue 4): the task pool, the trajectory pool with verdicts,
-- the LLM call cache and generation runs. Curation (issue 5) reads tasks and trajectories.
-- Documented in docs/data.md.

-- Scenarios that tasks refer to (from the NS-3 corpus or sampled from the same space).
CREATE TABLE scenarios (
    scenario_id  VARCHAR PRIMARY KEY,   -- Scenario.scenario_id (content hash)
    seed         BIGINT NOT NULL,       -- scenario seed: the unit of leak-free splits
    family       VARCHAR NOT NULL,
    scenario     JSON NOT NULL,         -- schemas/scenario.schema.json
    source       VARCHAR NOT NULL,      -- 'ns3_corpus' | 'sampled'
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Every task ever accepted into the pool: hand-written seeds and teacher-proposed ones.
CREATE TABLE tasks (
    task_id       VARCHAR PRIMARY KEY,  -- hash of (normalised instruction, scenario_id, goal)
    instruction   VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,     -- 'action' | 'qa'
    difficulty    VARCHAR NOT NULL,     -- intended: 'L1' | 'L2' | 'L3'
    scenario_id   VARCHAR NOT NULL,     -- -> scenarios
    family        VARCHAR NOT NULL,     -- scenario family (also the task family for balance)
    goal          JSON NOT NULL,        -- goal predicate / expected answer (docs/gym.md)
    source        VARCHAR NOT NULL,     -- 'seed' | 'generated'
    pattern       VARCHAR,              -- task pattern (forge.teacher.proposer), if known
    parent_tasks  JSON NOT NULL DEFAULT '[]',  -- in-context examples it was proposed from
    round         INTEGER NOT NULL,     -- 0 for seeds
    teacher       VARCHAR,              -- who proposed it (NULL for seeds)
    gen_run_id    VARCHAR,              -- -> generation_runs
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Proposals that did not become tasks (schema, goal grammar, unknown scenario, near-duplicate):
-- the raw text is kept so that nothing is lost silently.
CREATE TABLE task_rejects (
    reject_id     VARCHAR PRIMARY KEY,
    gen_run_id    VARCHAR,
    round         INTEGER NOT NULL,
    teacher       VARCHAR,
    reason        VARCHAR NOT NULL,     -- 'not_json' | 'schema_invalid' | 'bad_goal' |
                                        -- 'unknown_scenario' | 'goal_entities' |
                                        -- 'near_duplicate' | 'duplicate' | 'truncated'
    message       VARCHAR,
    raw_text      VARCHAR,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Every solving attempt, verified or rejected.
CREATE TABLE trajectories (
    traj_id         VARCHAR PRIMARY KEY,  -- Trajectory.id
    task_id         VARCHAR NOT NULL,     -- -> tasks
    attempt         INTEGER NOT NULL,     -- 0, 1, ... per task
    status          VARCHAR NOT NULL,     -- 'verified' | 'rejected'
    kind            VARCHAR NOT NULL,     -- 'action' | 'qa' (qa may use read-only tools)
    difficulty      VARCHAR NOT NULL,     -- by the number of tool calls actually made
    n_actions       INTEGER NOT NULL,
    n_failed_steps  INTEGER NOT NULL,     -- tool calls that returned an error observation
    tools           VARCHAR[] NOT NULL,   -- tool names called, in order
    error_recovery  BOOLEAN NOT NULL,     -- a failed step was followed by a recovery
    uncertain       BOOLEAN NOT NULL,     -- outcome relied on low-confidence predictions
    reject_stage    VARCHAR,              -- 'parse' | 'budget' | 'format' | 'execution' |
                                          -- 'outcome' | 'claims' (verifier stages)
    reject_reason   VARCHAR,              -- reason code of the first failing verifier
    reject_message  VARCHAR,
    verdicts        JSON,                 -- every verifier result
    trajectory      JSON,                 -- schemas/trajectory.schema.json (NULL if unparseable)
    raw_text        VARCHAR,              -- teacher output that could not be parsed, kept as is
    teacher         VARCHAR NOT NULL,
    round           INTEGER NOT NULL,
    model_hash      VARCHAR NOT NULL,     -- Experiment Model used
    gen_run_id      VARCHAR,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- LLM call cache: key = hash(model, messages, every generation parameter). Never the API key.
CREATE TABLE llm_calls (
    call_key           VARCHAR PRIMARY KEY,
    model              VARCHAR NOT NULL,
    base_url           VARCHAR,
    request            JSON NOT NULL,
    response           JSON,
    finish_reason      VARCHAR,
    prompt_tokens      INTEGER,
    completion_tokens  INTEGER,
    latency_s          DOUBLE,
    created_at         TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One row per `forge generate` run (or Prefect flow run), for resume and reporting.
CREATE TABLE generation_runs (
    gen_run_id    VARCHAR PRIMARY KEY,
    params        JSON NOT NULL,        -- flow parameters (never secrets)
    status        VARCHAR NOT NULL,     -- 'running' | 'completed' | 'failed' | 'budget_exhausted'
    stats         JSON,
    started_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at   TIMESTAMP
);
