-- Hourly and daily rollups of the 60 s KPI windows for long-range charts. Plain tables
-- kept current by the periodic job in storage/retention.py (the Apache edition has no
-- continuous aggregates, and one code path on both editions keeps them comparable).
CREATE TABLE kpi_rollup_hourly (
    kpi       text             NOT NULL,
    scope     text             NOT NULL,
    bucket    timestamptz      NOT NULL,
    value_avg double precision,
    value_min double precision,
    value_max double precision,
    value_last double precision,
    sum       double precision,
    count     bigint           NOT NULL,
    windows   integer          NOT NULL,
    PRIMARY KEY (kpi, scope, bucket)
);

CREATE TABLE kpi_rollup_daily (LIKE kpi_rollup_hourly INCLUDING ALL);
