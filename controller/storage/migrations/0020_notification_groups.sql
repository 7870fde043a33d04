-- Grouping: a rule with group_window_s > 0 sends one notification per channel for the
-- outages that start within that window and share a key (group_by: parent, tag, target
-- host, or the same region-only failure). The first outage's delivery leads and waits for
-- the window; the others are 'grouped' under the same group_key and listed by the leader
-- when it is sent (then 'collapsed'). A later outage opens the next window: an update.
ALTER TABLE notification_rules ADD COLUMN IF NOT EXISTS group_by text[] NOT NULL DEFAULT '{}';
ALTER TABLE notification_rules ADD COLUMN IF NOT EXISTS group_window_s integer NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS group_key text;
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN
    ('pending', 'sending', 'delivered', 'failed', 'dead', 'suppressed', 'collapsed', 'cancelled',
     'held', 'grouped'));
CREATE INDEX IF NOT EXISTS deliveries_group ON deliveries (channel_id, group_key)
    WHERE group_key IS NOT NULL AND status IN ('pending', 'held', 'grouped');
