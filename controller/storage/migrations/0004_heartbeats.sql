-- Heartbeat (cron) monitors: per-monitor token and deadline state, and the ping history.
-- The schedule itself (run_interval / cron, tz, grace_period) is the monitor's spec.

CREATE TABLE IF NOT EXISTS heartbeats (
    monitor_id      bigint PRIMARY KEY REFERENCES monitors (id) ON DELETE CASCADE,
    -- sha256 hex of the ping token; the token itself is shown once and never stored
    token_hash      text UNIQUE,
    token_hint      text,
    -- when the schedule (re)started: creation or resume; the first deadline counts from here
    anchor_at       timestamptz NOT NULL,
    last_ping_at    timestamptz,
    last_ping_kind  text,
    -- open runs: run id ('' when none was given) -> start time (ISO 8601)
    runs            jsonb NOT NULL DEFAULT '{}',
    -- cached result of heartbeats.deadline(); NULL when nothing can be missed (down, paused)
    deadline        timestamptz,
    deadline_reason text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS heartbeats_deadline ON heartbeats (deadline) WHERE deadline IS NOT NULL;

CREATE TABLE IF NOT EXISTS heartbeat_pings (
    id          bigserial PRIMARY KEY,
    monitor_id  bigint NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('success', 'start', 'fail', 'log')),
    exit_code   integer,
    rid         text,
    duration_ms double precision,
    source      text,
    user_agent  text,
    method      text,
    body        text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS heartbeat_pings_monitor ON heartbeat_pings (monitor_id, id DESC);
-- Retention deletes by time; BRIN keeps that index nearly free to maintain.
CREATE INDEX IF NOT EXISTS heartbeat_pings_at ON heartbeat_pings USING brin (at);
