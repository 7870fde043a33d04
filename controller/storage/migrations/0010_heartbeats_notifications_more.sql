-- Heartbeats and notifications, second round: alert thresholds, escalation policies on
-- monitors, and a wake-up for the dispatcher.

-- 'held': a delivery waiting for its monitor to reach the alert_threshold of
-- monitor_alert_settings (consecutive failing rounds, monitors.fail_streak).
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN
    ('pending', 'sending', 'delivered', 'failed', 'dead', 'suppressed', 'collapsed', 'cancelled',
     'held'));
CREATE INDEX IF NOT EXISTS deliveries_held ON deliveries (monitor_id) WHERE status = 'held';

-- An escalation policy (reference 004) is a notification rule with is_policy: it routes only
-- the monitors that name it in escalation_policy (besides its own monitor_ids and tags).
ALTER TABLE notification_rules ADD COLUMN IF NOT EXISTS is_policy boolean NOT NULL DEFAULT false;
ALTER TABLE monitors ADD COLUMN IF NOT EXISTS escalation_policy_id bigint
    REFERENCES notification_rules (id) ON DELETE SET NULL;

-- The dispatcher LISTENs on probefleet_events and runs a step at once instead of waiting for
-- its poll. Per statement with an empty payload: PostgreSQL folds identical notifications of
-- one transaction into one, so a batch of events costs one notification, sent at commit.
CREATE OR REPLACE FUNCTION probefleet_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('probefleet_events', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS events_notify ON events;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION probefleet_events_notify();

-- A monitor's notifications must name channels now (the API answers 422 otherwise, and
-- deleting a channel removes its id): drop ids of channels deleted before this rule.
UPDATE monitors m SET notifications = ARRAY(
    SELECT c FROM unnest(m.notifications) AS c WHERE EXISTS (SELECT 1 FROM notification_channels n WHERE n.id = c))
WHERE m.notifications <> '{}';
