-- Faulty and slow endpoints (issue 12): every endpoint fault the OpenAI-compatible client met
-- (retried or given up on), and every attempt of a generation run (a resumed run no longer
-- overwrites the history of the earlier attempts). Documented in docs/data.md.

-- One row per failed HTTP exchange with the endpoint. A call that succeeded on its third try
-- has two rows (outcome 'retried'); a call given up on has its last row with outcome
-- 'gave_up' (the task or proposal prompt it served is then recorded as a reject or left
-- unsolved for the next run: see docs/synthesis.md).
CREATE TABLE llm_faults (
    fault_id     VARCHAR PRIMARY KEY,
    gen_run_id   VARCHAR,               -- the generation run that made the call
    call_key     VARCHAR NOT NULL,      -- llm_calls.call_key of the request (once it succeeds)
    kind         VARCHAR NOT NULL,      -- http_429 | http_500 | http_503 | http_4xx... | timeout
                                        -- | connection | bad_body
    status_code  INTEGER,               -- HTTP status when there was one
    try_no       INTEGER NOT NULL,      -- 0 = the first try of the call
    outcome      VARCHAR NOT NULL,      -- retried | gave_up
    wait_s       DOUBLE,                -- back-off before the next try (Retry-After honoured)
    elapsed_s    DOUBLE,                -- time the failed exchange took
    purpose      VARCHAR,               -- propose | solve
    ref          VARCHAR,               -- task_id (solve) or round/prompt (propose)
    message      VARCHAR,
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One row per start of `forge generate` (or the forge/generate flow) for a run id.
CREATE TABLE generation_attempts (
    gen_run_id   VARCHAR NOT NULL,
    attempt      INTEGER NOT NULL,      -- 0, 1, ... in start order
    params       JSON NOT NULL,         -- never secrets
    status       VARCHAR NOT NULL,      -- running | completed | empty | failed |
                                        -- budget_exhausted | interrupted (never finished)
    stats        JSON,
    started_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at  TIMESTAMP,
    PRIMARY KEY (gen_run_id, attempt)
);
