-- Notification channels, rules, deliveries and the dispatcher's events watermark.

-- A monitor's own channel list (reference 000: "notifications": [1, 2, 3]).
ALTER TABLE monitors ADD COLUMN IF NOT EXISTS notifications bigint[] NOT NULL DEFAULT '{}';

CREATE TABLE IF NOT EXISTS notification_channels (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL,
    name             text NOT NULL,
    -- full config including secrets: never returned by the API (it shows redact())
    config           jsonb NOT NULL,
    is_enabled       boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    disabled_at      timestamptz,
    reminder_minutes integer CHECK (reminder_minutes > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS notification_rules (
    id                     bigserial PRIMARY KEY,
    name                   text NOT NULL DEFAULT '',
    -- empty: the default set (incident opened/acknowledged/resolved, degraded, ssl.expiring)
    events                 text[] NOT NULL DEFAULT '{}',
    -- both empty: every monitor
    monitor_ids            bigint[] NOT NULL DEFAULT '{}',
    tags                   text[] NOT NULL DEFAULT '{}',
    min_severity           text,
    channel_ids            bigint[] NOT NULL,
    reminder_minutes       integer CHECK (reminder_minutes > 0),
    escalate_after_minutes integer CHECK (escalate_after_minutes > 0),
    escalation_channel_ids bigint[] NOT NULL DEFAULT '{}',
    is_enabled             boolean NOT NULL DEFAULT true,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- One row per (event, channel, kind, seq): the unique key is what makes a delivery exist
-- once however many controllers fan out the same event.
CREATE TABLE IF NOT EXISTS deliveries (
    id              bigserial PRIMARY KEY,
    event_id        bigint,
    channel_id      bigint NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    kind            text NOT NULL DEFAULT 'event' CHECK (kind IN ('event', 'reminder', 'escalation', 'test')),
    seq             integer NOT NULL DEFAULT 0,
    monitor_id      bigint,
    incident_id     bigint,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN
                    ('pending', 'sending', 'delivered', 'failed', 'dead', 'suppressed', 'collapsed',
                     'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    last_error      text,
    reminder_s      integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (event_id, channel_id, kind, seq)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at)
    WHERE status IN ('pending', 'failed', 'sending');
CREATE INDEX IF NOT EXISTS deliveries_channel ON deliveries (channel_id, id DESC);
CREATE INDEX IF NOT EXISTS deliveries_suppressed ON deliveries (monitor_id) WHERE status = 'suppressed';

-- The fan-out watermark: every event with id <= last_event_id has its deliveries.
CREATE TABLE IF NOT EXISTS dispatcher_cursor (
    name          text PRIMARY KEY,
    last_event_id bigint NOT NULL DEFAULT 0
);
-- Installed on a database with history: start after the events already there.
INSERT INTO dispatcher_cursor (name, last_event_id)
    SELECT 'fanout', COALESCE(max(id), 0) FROM events ON CONFLICT DO NOTHING;
