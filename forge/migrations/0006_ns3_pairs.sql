-- Paired ns-3 runs (issue 11): a base scenario and the same scenario after one change made by a
-- gym configure handler, both simulated in ns-3 (rows of ns3_runs). The Experiment Model's
-- paired loss and the effect-fidelity report read this table. Documented in docs/data.md.
-- IF NOT EXISTS: stores written before this migration created the same table on first use.
CREATE TABLE IF NOT EXISTS ns3_pairs (
    pair_id         VARCHAR PRIMARY KEY,  -- hash of (base run id, changed run id)
    base_run_id     VARCHAR NOT NULL,     -- ns3_runs.run_id of the base scenario
    changed_run_id  VARCHAR NOT NULL,     -- ns3_runs.run_id after the change
    seed            BIGINT NOT NULL,      -- the base scenario's seed (the unit of splits)
    split           VARCHAR NOT NULL,     -- split of both runs
    grid            VARCHAR NOT NULL,     -- 'pairs' (corpus grid) or 'hotspot' (2nd distribution)
    tool            VARCHAR NOT NULL,     -- configure tool that made the change
    args            JSON NOT NULL,
    description     VARCHAR NOT NULL,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
);
