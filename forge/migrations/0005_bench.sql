-- forge bench (issue 9): closed-loop evaluation of agents on held-out tasks (corpora/bench/).
-- Documented in docs/data.md and docs/bench.md.

-- One `python -m forge bench` invocation per (agent, task set, k, seed, options): re-running the
-- same agent with the same options replaces its episodes, so a report is a function of them.
CREATE TABLE bench_runs (
    bench_run_id   VARCHAR PRIMARY KEY,  -- hash of (agent, task set version, k, seed, options)
    agent          VARCHAR NOT NULL,     -- agent spec as given: noop, teacher, openai:M@URL, hf:PATH
    task_set       VARCHAR NOT NULL,     -- e.g. 'v1' (corpora/bench/v1/manifest.json version)
    task_set_hash  VARCHAR NOT NULL,     -- content hash of the task file used
    k              INTEGER NOT NULL,     -- trials per task (environment seeds 0..k-1)
    seed           INTEGER NOT NULL,     -- run seed (sampling seeds of the agent)
    n_tasks        INTEGER NOT NULL,
    status         VARCHAR NOT NULL,     -- 'running' | 'completed' | 'failed' | 'endpoint_error'
    params         JSON NOT NULL,        -- BenchConfig (no secrets)
    summary        JSON,                 -- the agent's entry of report.json
    started_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at    TIMESTAMP
);

-- One closed-loop episode: an agent on a task under one environment seed (trial).
CREATE TABLE bench_episodes (
    bench_run_id     VARCHAR NOT NULL,   -- -> bench_runs
    task_id          VARCHAR NOT NULL,   -- corpora/bench/<v>/tasks.jsonl task_id
    trial            INTEGER NOT NULL,   -- 0..k-1: the environment (measurement-noise) seed
    kind             VARCHAR NOT NULL,   -- 'action' | 'qa'
    difficulty       VARCHAR NOT NULL,   -- the task's L1 | L2 | L3
    family           VARCHAR NOT NULL,   -- scenario family
    source           VARCHAR NOT NULL,   -- 'grammar' | 'handwritten'
    success          BOOLEAN NOT NULL,   -- all four verifier stages passed
    termination      VARCHAR NOT NULL,   -- 'answer' | 'step_budget' | 'parse_error' | 'loop' |
                                         -- 'truncated' | 'endpoint_error' | 'agent_error'
    stages           JSON NOT NULL,      -- {format, execution, outcome, claims}: pass|fail|uncertain|null
    reject_stage     VARCHAR,            -- first stage that did not pass
    reject_reason    VARCHAR,
    n_calls          INTEGER NOT NULL,   -- tool calls made
    n_configure      INTEGER NOT NULL,   -- of them configure calls (incl. rollback)
    n_failed         INTEGER NOT NULL,   -- tool calls answered with an error observation
    collateral       INTEGER NOT NULL,   -- UEs the task did not name whose SLA or DL rate regressed
    prompt_tokens    BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    wall_s           DOUBLE NOT NULL,
    final_scenario   JSON,               -- the configuration at the end (for the ns-3 re-check)
    messages         JSON NOT NULL,      -- the whole conversation
    error            VARCHAR,            -- endpoint/agent error text, if any
    PRIMARY KEY (bench_run_id, task_id, trial)
);

-- ns-3 re-check of sampled episodes: the final configuration simulated in real ns-3 and the goal
-- judged on ns-3's KPIs.
CREATE TABLE bench_ns3_checks (
    bench_run_id   VARCHAR NOT NULL,
    task_id        VARCHAR NOT NULL,
    trial          INTEGER NOT NULL,
    success_model  BOOLEAN NOT NULL,     -- the bench verdict (Experiment Model)
    success_ns3    BOOLEAN,              -- the goal judged on ns-3's KPIs (NULL: ns-3 failed)
    ns3_status     VARCHAR NOT NULL,     -- 'ok' | 'failed' | 'timeout'
    detail         JSON,
    PRIMARY KEY (bench_run_id, task_id, trial)
);
