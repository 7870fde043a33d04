-- Incidents, timeline, maintenance windows and periods, dependencies, controller leases.

ALTER TABLE monitors ADD COLUMN IF NOT EXISTS parent_id bigint REFERENCES monitors (id) ON DELETE SET NULL;
-- Raise an incident (not only an event) when the monitor turns degraded.
ALTER TABLE monitors ADD COLUMN IF NOT EXISTS incident_on_degraded boolean NOT NULL DEFAULT false;
-- Due time of the first failing round of the current failing streak.
ALTER TABLE monitors ADD COLUMN IF NOT EXISTS fail_since timestamptz;
-- Regions of the monitor's locations left out of the vote (no live probe / no answer).
ALTER TABLE monitors ADD COLUMN IF NOT EXISTS unavailable_regions text[] NOT NULL DEFAULT '{}';

CREATE TABLE IF NOT EXISTS incidents (
    id               bigserial PRIMARY KEY,
    monitor_id       bigint REFERENCES monitors (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'acknowledged', 'resolved')),
    severity         text NOT NULL DEFAULT 'high',
    title            text NOT NULL,
    manual           boolean NOT NULL DEFAULT false,
    -- true when no notification event was written (parent outage)
    suppressed       boolean NOT NULL DEFAULT false,
    cause_monitor_id bigint REFERENCES monitors (id) ON DELETE SET NULL,
    started_at       timestamptz NOT NULL,
    acknowledged_at  timestamptz,
    resolved_at      timestamptz,
    root_cause       text,
    root_reason      text,
    affected_regions text[] NOT NULL DEFAULT '{}',
    checks_failed    integer NOT NULL DEFAULT 0,
    checks_total     integer NOT NULL DEFAULT 0,
    assignee         text,
    notes            text,
    external_ticket_id text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- At most one open incident per monitor, whichever controller tries to open it.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents (monitor_id) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS incidents_started ON incidents (started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS incidents_monitor ON incidents (monitor_id, started_at DESC);

CREATE TABLE IF NOT EXISTS incident_timeline (
    id          bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    message     text NOT NULL DEFAULT '',
    data        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS incident_timeline_incident ON incident_timeline (incident_id, id);

CREATE TABLE IF NOT EXISTS maintenance_windows (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    monitor_ids  bigint[] NOT NULL DEFAULT '{}',
    tags         text[] NOT NULL DEFAULT '{}',
    -- one-off: starts_at/ends_at; recurring: days (0=Mon..6=Sun), start_time, duration_s, time_zone
    starts_at    timestamptz,
    ends_at      timestamptz,
    days         smallint[] NOT NULL DEFAULT '{}',
    start_time   time,
    duration_s   integer,
    time_zone    text NOT NULL DEFAULT 'UTC',
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Occurrences of windows that covered a monitor's rounds: uptime excludes these spans.
CREATE TABLE IF NOT EXISTS maintenance_periods (
    monitor_id bigint NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    window_id  bigint NOT NULL REFERENCES maintenance_windows (id) ON DELETE CASCADE,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    PRIMARY KEY (monitor_id, window_id, starts_at)
);
CREATE INDEX IF NOT EXISTS maintenance_periods_span ON maintenance_periods (monitor_id, ends_at);

-- Live controllers; schedule ownership is rendezvous-hashed over the unexpired ones.
CREATE TABLE IF NOT EXISTS controllers (
    id            text PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL,
    lease_until   timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS events_incident ON events (incident_id, id);
