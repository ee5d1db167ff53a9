-- The window that last raised or escalated an alert (issue #15): its start, from which on
-- final windows may clear the alert, and whether its value was live (not yet final) at
-- that moment, which the wall shows. Both optional in the record: rows written before
-- this migration keep NULL / false.
ALTER TABLE alerts ADD COLUMN window_start timestamptz;
ALTER TABLE alerts ADD COLUMN on_live_window boolean NOT NULL DEFAULT false;
ALTER TABLE alert_transitions ADD COLUMN window_start timestamptz;
ALTER TABLE alert_transitions ADD COLUMN on_live_window boolean NOT NULL DEFAULT false;
