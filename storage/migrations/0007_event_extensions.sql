-- The CloudEvents attributes of a raw event beyond the columns above (issue 11): the
-- optional subject and dataschema, and extensions such as traceparent, tracestate and
-- partitionkey, as one JSON object; NULL when the event has none (most events, and every
-- row written before this migration). Nothing a producer sent is lost on the way.
ALTER TABLE events ADD COLUMN extensions jsonb;
