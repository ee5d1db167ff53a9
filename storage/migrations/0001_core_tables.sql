-- Core tables: KPI windows, raw events, alerts (state + transitions).
-- Contract: docs/architecture.md (TimescaleDB section).

-- One row per (kpi, scope, window); the sink keeps the highest revision.
CREATE TABLE kpi_windows (
    kpi          text             NOT NULL,
    scope        text             NOT NULL,
    window_start timestamptz      NOT NULL,
    window_end   timestamptz      NOT NULL,
    value        double precision,
    count        bigint           NOT NULL,
    min          double precision,
    max          double precision,
    sum          double precision,
    final        boolean          NOT NULL DEFAULT false,
    revision     bigint           NOT NULL DEFAULT 0,
    computed_at  timestamptz      NOT NULL,
    -- Window length in seconds (60 tumbling, 900 hopping, 3600 hourly): charts ask for one size.
    window_s     integer GENERATED ALWAYS AS (extract(epoch FROM window_end - window_start)::integer) STORED,
    CONSTRAINT kpi_windows_key UNIQUE (kpi, scope, window_start, window_end)
);
SELECT create_hypertable('kpi_windows', by_range('window_start', INTERVAL '7 days'),
                         create_default_indexes => false);
-- Serves kpi_history: one kpi/scope/window size over a time range.
CREATE INDEX kpi_windows_chart ON kpi_windows (kpi, scope, window_s, window_start DESC);

-- The newest window of each (kpi, scope, window size), maintained by the KPI sink in the
-- same transaction as kpi_windows: the wall's snapshot reads a small table instead of
-- scanning every chunk for a "latest row per group".
CREATE TABLE kpi_latest (
    kpi          text             NOT NULL,
    scope        text             NOT NULL,
    window_s     integer          NOT NULL,
    window_start timestamptz      NOT NULL,
    window_end   timestamptz      NOT NULL,
    value        double precision,
    count        bigint           NOT NULL,
    min          double precision,
    max          double precision,
    sum          double precision,
    final        boolean          NOT NULL,
    revision     bigint           NOT NULL,
    computed_at  timestamptz      NOT NULL,
    PRIMARY KEY (kpi, scope, window_s)
);
CREATE INDEX kpi_latest_by_window ON kpi_latest (window_s, kpi, scope);

-- Raw events as received (CloudEvents), on their event time.
CREATE TABLE events (
    time     timestamptz NOT NULL,
    type     text        NOT NULL,
    source   text        NOT NULL,
    id       text        NOT NULL,
    district text        NOT NULL,
    data     jsonb       NOT NULL,
    CONSTRAINT events_key UNIQUE (time, source, id)
);
SELECT create_hypertable('events', by_range('time', INTERVAL '6 hours'),
                         create_default_indexes => false);
-- Serves raw_events: one source over a time range.
CREATE INDEX events_by_source ON events (source, time DESC);

-- Current state of every alert (one row per alert_id, highest revision wins).
CREATE TABLE alerts (
    alert_id        text             PRIMARY KEY,
    rule            text             NOT NULL,
    subject         text             NOT NULL,
    state           text             NOT NULL
        CHECK (state IN ('raised', 'escalated', 'acknowledged', 'cleared')),
    severity        text             NOT NULL,
    level           integer          NOT NULL,
    title           text             NOT NULL,
    kpi             text,
    value           double precision,
    threshold       double precision,
    raised_at       timestamptz      NOT NULL,
    updated_at      timestamptz      NOT NULL,
    acknowledged_by text,
    assignee        text,
    revision        bigint           NOT NULL
);
-- Serves active_alerts (partial: only the few open ones are indexed).
CREATE INDEX alerts_active ON alerts (updated_at DESC) WHERE state <> 'cleared';

-- Every transition of every alert (history; kept forever by default).
CREATE TABLE alert_transitions (
    alert_id        text             NOT NULL,
    revision        bigint           NOT NULL,
    rule            text             NOT NULL,
    subject         text             NOT NULL,
    state           text             NOT NULL,
    severity        text             NOT NULL,
    level           integer          NOT NULL,
    title           text             NOT NULL,
    kpi             text,
    value           double precision,
    threshold       double precision,
    raised_at       timestamptz      NOT NULL,
    updated_at      timestamptz      NOT NULL,
    acknowledged_by text,
    assignee        text,
    PRIMARY KEY (alert_id, revision)
);
-- Serves alert_history: newest transitions first.
CREATE INDEX alert_transitions_by_time ON alert_transitions (updated_at DESC);
