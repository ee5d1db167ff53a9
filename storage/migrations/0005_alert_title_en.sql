-- The English title of an alert beside the Vietnamese one (issue 12: alert titles in both
-- languages on the wall). Optional in the record: rows written before this migration keep
-- NULL, and the wall shows their Vietnamese title in either language.
ALTER TABLE alerts ADD COLUMN title_en text;
ALTER TABLE alert_transitions ADD COLUMN title_en text;
