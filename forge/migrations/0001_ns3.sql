-- NS-3 seed corpus (forge.ns3): runs, per-UE KPIs, per-cell KPIs. See docs/data.md.
CREATE TABLE ns3_runs (
    run_id       VARCHAR PRIMARY KEY,  -- hash of (scenario content, ns-3 version)
    scenario_id  VARCHAR NOT NULL,     -- hash of scenario content
    seed         BIGINT NOT NULL,      -- scenario seed: the unit of train/held-out splits
    family       VARCHAR NOT NULL,
    split        VARCHAR NOT NULL,     -- 'calibration' | 'heldout' | 'noise_floor' | 'adhoc'
    status       VARCHAR NOT NULL,     -- 'ok' | 'failed' | 'timeout'
    error        VARCHAR,
    scenario     JSON NOT NULL,
    n_cells      INTEGER NOT NULL,
    n_ues        INTEGER NOT NULL,
    rng_run      INTEGER NOT NULL,
    sim_time_s   DOUBLE NOT NULL,
    wall_time_s  DOUBLE,
    ns3_version  VARCHAR NOT NULL,
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE ns3_ue_kpis (
    run_id              VARCHAR NOT NULL,
    ue                  INTEGER NOT NULL,
    imsi                INTEGER,
    serving_cell        INTEGER,
    dl_offered_mbps     DOUBLE NOT NULL,
    ul_offered_mbps     DOUBLE NOT NULL,
    dl_throughput_mbps  DOUBLE NOT NULL,
    ul_throughput_mbps  DOUBLE NOT NULL,
    delay_ms            DOUBLE,
    ul_delay_ms         DOUBLE,
    jitter_ms           DOUBLE,
    loss_ratio          DOUBLE,
    ul_loss_ratio       DOUBLE,
    rsrp_dbm            DOUBLE,
    sinr_db             DOUBLE,
    handovers           INTEGER NOT NULL,
    PRIMARY KEY (run_id, ue)
);
CREATE TABLE ns3_cell_kpis (
    run_id              VARCHAR NOT NULL,
    cell                INTEGER NOT NULL,
    active              BOOLEAN NOT NULL,
    n_ues               INTEGER NOT NULL,
    dl_offered_mbps     DOUBLE NOT NULL,
    dl_throughput_mbps  DOUBLE NOT NULL,
    ul_throughput_mbps  DOUBLE NOT NULL,
    mean_delay_ms       DOUBLE,
    mean_sinr_db        DOUBLE,
    PRIMARY KEY (run_id, cell)
);
