-- Who caused an event written while serving an API request or a console action:
-- 'key:<prefix>' or 'user:<name>'; NULL for what the engine decided on its own (a verdict,
-- a missed heartbeat). Written by storage/events.insert from the request's context.
ALTER TABLE events ADD COLUMN IF NOT EXISTS actor text;
