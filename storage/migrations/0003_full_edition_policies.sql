-- requires: timescale
-- Only on the full (Timescale License) edition: native compression of old chunks.
-- segmentby + orderby cover each unique key, so conflict checks still work on compressed
-- chunks (late KPI revisions, replayed events). Retention there is a background policy
-- (added by storage/retention.py with the configured ages: settings, not schema).
ALTER TABLE events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'source',
    timescaledb.compress_orderby = 'time DESC, id'
);
SELECT add_compression_policy('events', INTERVAL '1 day');
ALTER TABLE kpi_windows SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'kpi, scope',
    timescaledb.compress_orderby = 'window_start DESC, window_end'
);
SELECT add_compression_policy('kpi_windows', INTERVAL '30 days');
