-- 6G-Forge curation (forge.curate, issue 5): curated sets built from the verified pool
-- (tables trajectories/tasks/scenarios of 0002), every drop with its stage and reason, the
-- balance achieved versus requested, embeddings computed once per text, and browsing views.
-- Documented in docs/curation.md and docs/data.md ("Curation tables").

-- One row per named curated set (the last successful build under that name).
CREATE TABLE curated_sets (
    name          VARCHAR PRIMARY KEY,
    set_hash      VARCHAR NOT NULL,     -- hash of (pool fingerprint, options): the rerun key
    pool_hash     VARCHAR NOT NULL,     -- fingerprint of the pool rows it was built from
    options       JSON NOT NULL,        -- every CurateConfig field
    command       VARCHAR NOT NULL,     -- the exact command line
    target        BIGINT NOT NULL,
    n_members     BIGINT NOT NULL,
    n_rl_prompts  BIGINT NOT NULL,
    stats         JSON NOT NULL,        -- per-stage in/out counts and timings
    teachers      VARCHAR[] NOT NULL,
    model_hashes  VARCHAR[] NOT NULL,   -- Experiment Model hash(es) of the members
    export_dir    VARCHAR,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- The members of each curated set, with their split and balance buckets.
CREATE TABLE curated_members (
    set_name        VARCHAR NOT NULL,
    traj_id         VARCHAR NOT NULL,
    task_id         VARCHAR NOT NULL,
    split           VARCHAR NOT NULL,   -- 'train' | 'validation' | 'test'
    position        INTEGER NOT NULL,   -- deterministic order within the split
    kind            VARCHAR NOT NULL,   -- 'qa' | 'action'
    difficulty      VARCHAR NOT NULL,   -- 'L1' | 'L2' | 'L3'
    family          VARCHAR NOT NULL,
    primary_tool    VARCHAR NOT NULL,   -- the tool bucket used by the per-tool cap
    error_recovery  BOOLEAN NOT NULL,
    n_actions       INTEGER NOT NULL,
    tools           VARCHAR[] NOT NULL,
    seed            BIGINT NOT NULL,    -- scenario seed
    split_group     BIGINT NOT NULL,    -- connected component of (seed, near-dup clusters)
    teacher         VARCHAR NOT NULL,
    model_hash      VARCHAR NOT NULL,
    PRIMARY KEY (set_name, traj_id)
);

-- Every pool row that did not make it into a set: the first stage that dropped it and why.
CREATE TABLE curation_drops (
    set_name      VARCHAR NOT NULL,
    traj_id       VARCHAR NOT NULL,
    stage         VARCHAR NOT NULL,     -- 'verified' | 'exact' | 'near_instruction' |
                                        -- 'near_trajectory' | 'semantic' | 'balance'
    reason        VARCHAR NOT NULL,     -- reason code, e.g. 'exact_duplicate', 'cap_tool'
    kept_traj_id  VARCHAR,              -- the member of its cluster that was kept (dedup stages)
    score         DOUBLE,               -- similarity that triggered the drop (dedup stages)
    PRIMARY KEY (set_name, traj_id)
);

-- Balance achieved versus requested, one row per quota or cap bucket.
CREATE TABLE curation_balance (
    set_name     VARCHAR NOT NULL,
    dimension    VARCHAR NOT NULL,      -- 'kind' | 'difficulty' | 'error_recovery' | 'tool' | 'family'
    bucket       VARCHAR NOT NULL,
    requested    BIGINT,                -- quota (minimum for error_recovery), NULL for caps
    cap          BIGINT,                -- maximum (caps), NULL for quotas
    available    BIGINT NOT NULL,       -- candidates after deduplication
    achieved     BIGINT NOT NULL,
    short        BIGINT NOT NULL,       -- max(requested - achieved, 0)
    filled_from  VARCHAR,               -- nearest bucket that received this bucket's shortfall
    PRIMARY KEY (set_name, dimension, bucket)
);

-- RL prompt set: tasks (no trajectories) with the split of their scenario group.
CREATE TABLE curated_rl_prompts (
    set_name     VARCHAR NOT NULL,
    task_id      VARCHAR NOT NULL,
    split        VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,
    difficulty   VARCHAR NOT NULL,
    family       VARCHAR NOT NULL,
    scenario_id  VARCHAR NOT NULL,
    seed         BIGINT NOT NULL,
    instruction  VARCHAR NOT NULL,
    PRIMARY KEY (set_name, task_id)
);

-- Sentence embeddings, computed once per (text, model): text_hash = md5 of the embedded text.
CREATE TABLE curation_embeddings (
    text_hash   VARCHAR NOT NULL,
    model_id    VARCHAR NOT NULL,       -- encoder identity (path + backend + max length)
    embedding   FLOAT[384] NOT NULL,    -- L2-normalised
    PRIMARY KEY (text_hash, model_id)
);

-- Cached outputs of the dedup stages, keyed by hash(stage inputs, stage options): a rerun with
-- the same pool and options reuses them instead of recomputing.
CREATE TABLE curation_stage_cache (
    stage_key     VARCHAR NOT NULL,
    stage         VARCHAR NOT NULL,
    traj_id       VARCHAR NOT NULL,
    reason        VARCHAR NOT NULL,     -- '' for a survivor
    kept_traj_id  VARCHAR,
    score         DOUBLE,
    cluster       BIGINT,               -- near-dup cluster id (for leak-free splits)
    PRIMARY KEY (stage_key, traj_id)
);

-- Drop reasons with counts, per set and stage.
CREATE VIEW curation_drop_counts AS
SELECT set_name, stage, reason, count(*) AS n
FROM curation_drops GROUP BY ALL ORDER BY set_name, n DESC;

-- Members joined with their task and trajectory, for browsing.
CREATE VIEW curated_samples AS
SELECT m.set_name, m.split, m.position, m.kind, m.difficulty, m.family, m.primary_tool,
       m.error_recovery, m.n_actions, t.instruction, m.traj_id, m.task_id, j.trajectory
FROM curated_members m
JOIN tasks t USING (task_id)
JOIN trajectories j USING (traj_id);

-- Per-tool histogram: how many members call each tool (a member counts once per tool).
CREATE VIEW curated_tool_histogram AS
SELECT set_name, split, tool, count(DISTINCT traj_id) AS members
FROM (SELECT set_name, split, traj_id, unnest(tools) AS tool FROM curated_members)
GROUP BY ALL ORDER BY set_name, split, members DESC;

-- Per-difficulty (and kind) histogram.
CREATE VIEW curated_difficulty_histogram AS
SELECT set_name, split, kind, difficulty, count(*) AS members
FROM curated_members GROUP BY ALL ORDER BY ALL;

-- Balance achieved vs requested, as shares of the set.
CREATE VIEW curation_balance_report AS
SELECT b.set_name, b.dimension, b.bucket, b.requested, b.cap, b.available, b.achieved, b.short,
       b.filled_from, round(b.achieved / nullif(s.n_members, 0), 4) AS achieved_share,
       round(b.requested / nullif(s.target, 0), 4) AS requested_share
FROM curation_balance b JOIN curated_sets s ON s.name = b.set_name
ORDER BY b.set_name, b.dimension, b.bucket;

-- Token vectors of the static encoder distilled from the sentence-transformers model: the
-- model's output for each token alone, computed lazily for the tokens the pool uses.
CREATE TABLE curation_static_tokens (
    model_id   VARCHAR NOT NULL,
    token_id   INTEGER NOT NULL,
    vector     FLOAT[384] NOT NULL,
    PRIMARY KEY (model_id, token_id)
);
