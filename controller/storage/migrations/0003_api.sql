-- REST API v1: pause reasons, projects, per-monitor alert settings, list indexes.

ALTER TABLE monitors ADD COLUMN IF NOT EXISTS project text;
ALTER TABLE monitors ADD COLUMN IF NOT EXISTS paused_reason text;
ALTER TABLE monitors ADD COLUMN IF NOT EXISTS paused_at timestamptz;

-- Keyset pagination: every sortable column with id as the tie-breaker.
CREATE INDEX IF NOT EXISTS monitors_name_id ON monitors (name, id);
CREATE INDEX IF NOT EXISTS monitors_updated_id ON monitors (updated_at, id);
CREATE INDEX IF NOT EXISTS monitors_status_id ON monitors (status, id);
CREATE INDEX IF NOT EXISTS monitors_kind_id ON monitors (kind, id);
CREATE INDEX IF NOT EXISTS monitors_tags ON monitors USING gin (tags);
CREATE INDEX IF NOT EXISTS monitors_project ON monitors (project, id) WHERE project IS NOT NULL;
-- Uptime over closed first-attempt rounds of one monitor and a time span.
CREATE INDEX IF NOT EXISTS rounds_verdicts ON rounds (monitor_id, due) INCLUDE (verdict)
    WHERE attempt = 0 AND verdict IS NOT NULL;

-- Per-monitor alert settings (reference 001), read by the notifications dispatcher.
CREATE TABLE IF NOT EXISTS monitor_alert_settings (
    monitor_id        bigint PRIMARY KEY REFERENCES monitors (id) ON DELETE CASCADE,
    email_enabled     boolean NOT NULL DEFAULT false,
    email_recipients  text[] NOT NULL DEFAULT '{}',
    slack_enabled     boolean NOT NULL DEFAULT false,
    alert_on_recovery boolean NOT NULL DEFAULT true,
    alert_threshold   integer NOT NULL DEFAULT 1 CHECK (alert_threshold >= 1),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- A key's own request limit per rate-limit window (NULL: the controller's default).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rate_limit integer CHECK (rate_limit > 0);

-- A key's own request limit per rate-limit window (NULL: the controller's default).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rate_limit integer CHECK (rate_limit > 0);
