-- The delivery log: one row per attempt to send a delivery (deliveries keeps only the
-- latest state and error), so "what happened to the page for incident 42" has an answer
-- after the retries: each try's channel, event, outcome, HTTP status, error and duration.
-- Written by the dispatcher with the outcome of its own claim only (storage/notifications.record).
CREATE TABLE IF NOT EXISTS delivery_attempts (
    id            bigserial PRIMARY KEY,
    delivery_id   bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    channel_id    bigint,
    subscriber_id bigint,
    event_id      bigint,
    event_kind    text,
    monitor_id    bigint,
    incident_id   bigint,
    -- delivered | failed (transient, retried) | dead (permanent, or attempts exhausted)
    -- | cancelled (nothing sent: channel disabled, incident no longer active)
    outcome       text NOT NULL,
    status_code   integer,
    error         text,
    duration_ms   double precision,
    attempted_at  timestamptz NOT NULL,
    UNIQUE (delivery_id, attempt)
);
CREATE INDEX IF NOT EXISTS delivery_attempts_incident ON delivery_attempts (incident_id, id DESC)
    WHERE incident_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS delivery_attempts_channel ON delivery_attempts (channel_id, id DESC)
    WHERE channel_id IS NOT NULL;
