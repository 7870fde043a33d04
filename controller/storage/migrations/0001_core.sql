-- Core schema: monitors, rounds, raw results, probes, API keys, events outbox.

CREATE TABLE monitors (
    id                bigserial PRIMARY KEY,
    name              text NOT NULL,
    kind              text NOT NULL,
    spec              jsonb NOT NULL,
    interval_s        integer NOT NULL CHECK (interval_s > 0),
    timeout_s         double precision NOT NULL CHECK (timeout_s > 0),
    locations         text[] NOT NULL,
    consensus         text NOT NULL DEFAULT 'majority',
    quorum            integer,
    retry_count       integer NOT NULL DEFAULT 0,
    recovery_count    integer NOT NULL DEFAULT 1,
    enabled           boolean NOT NULL DEFAULT true,
    tags              text[] NOT NULL DEFAULT '{}',
    extra             jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- current state, written by verdicts (compare-and-set on last_round)
    status            text NOT NULL DEFAULT 'pending',
    status_changed_at timestamptz,
    last_round        timestamptz,
    last_check        timestamptz,
    last_success      timestamptz,
    last_failure      timestamptz,
    response_time_ms  double precision,
    fail_streak       integer NOT NULL DEFAULT 0,
    pass_streak       integer NOT NULL DEFAULT 0
);
CREATE INDEX monitors_status ON monitors (status);
CREATE INDEX monitors_kind ON monitors (kind);
CREATE INDEX monitors_created ON monitors (created_at, id);

-- One row per (monitor, due time, attempt): the round's expected regions and verdict.
CREATE TABLE rounds (
    monitor_id bigint NOT NULL,
    due        timestamptz NOT NULL,
    attempt    smallint NOT NULL DEFAULT 0,
    regions    text[] NOT NULL,
    answered   text[] NOT NULL DEFAULT '{}',
    deadline   timestamptz NOT NULL,
    closed_at  timestamptz,
    verdict    text,
    PRIMARY KEY (monitor_id, due, attempt)
) PARTITION BY RANGE (due);
CREATE TABLE rounds_default PARTITION OF rounds DEFAULT;
CREATE INDEX rounds_open ON rounds (deadline) WHERE closed_at IS NULL;

-- Raw per-region results; partitioned by day, dropped by retention.
CREATE TABLE check_results (
    monitor_id  bigint NOT NULL,
    due         timestamptz NOT NULL,
    region      text NOT NULL,
    attempt     smallint NOT NULL DEFAULT 0,
    probe_id    text NOT NULL,
    status      text NOT NULL,
    reason      text,
    message     text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL,
    duration_ms real NOT NULL,
    status_code smallint,
    timings     jsonb,
    details     jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (monitor_id, due, region, attempt)
) PARTITION BY RANGE (due);
CREATE TABLE check_results_default PARTITION OF check_results DEFAULT;

CREATE TABLE probes (
    id             text PRIMARY KEY,
    region         text NOT NULL,
    version        text NOT NULL,
    concurrency    integer NOT NULL,
    in_flight      integer NOT NULL DEFAULT 0,
    source_address text,
    started_at     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL
);
CREATE INDEX probes_region ON probes (region, last_seen);

CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    prefix       text NOT NULL UNIQUE,
    hash         text NOT NULL,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);

-- Events outbox: written in the same transaction as the state change it records.
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    monitor_id  bigint,
    incident_id bigint,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_monitor ON events (monitor_id, id);
CREATE INDEX events_kind ON events (kind, id);
