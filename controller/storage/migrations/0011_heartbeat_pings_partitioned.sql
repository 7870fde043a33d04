-- Heartbeat pings partitioned by day on `at`, like check_results, so retention drops whole
-- partitions (retention.TABLES) instead of deleting rows in batches. Every ping of the old
-- table moves over here, in this migration's transaction, keeping its id.

ALTER TABLE heartbeat_pings RENAME TO heartbeat_pings_unpartitioned;

CREATE TABLE heartbeat_pings (
    -- the old table's sequence, so ids keep growing from where they were
    id          bigint NOT NULL DEFAULT nextval('heartbeat_pings_id_seq'),
    monitor_id  bigint NOT NULL,
    at          timestamptz NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('success', 'start', 'fail', 'log')),
    exit_code   integer,
    rid         text,
    duration_ms double precision,
    source      text,
    user_agent  text,
    method      text,
    body        text NOT NULL DEFAULT ''
) PARTITION BY RANGE (at);
-- No DEFAULT partition, unlike check_results: `at` is the controller's clock and
-- db.ensure_partitions keeps days ahead (at start and every 5 minutes), and without one the
-- history query scans partitions in order and stops at the newest that fill a page, instead
-- of merging every partition. A ping with no partition fails its batch (503, the client
-- retries) rather than landing where retention never drops it.
ALTER SEQUENCE heartbeat_pings_id_seq OWNED BY heartbeat_pings.id;

-- One partition per day holding old pings, named and bounded as db.ensure_partitions does:
-- UTC days, whatever the server's time zone.
DO $$
DECLARE
    d date;
BEGIN
    FOR d IN SELECT DISTINCT (at AT TIME ZONE 'UTC')::date FROM heartbeat_pings_unpartitioned LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF heartbeat_pings FOR VALUES FROM (%L) TO (%L)',
                       'heartbeat_pings_' || to_char(d, 'YYYYMMDD'), d::text || ' 00:00+00',
                       (d + 1)::text || ' 00:00+00');
    END LOOP;
END $$;

INSERT INTO heartbeat_pings (id, monitor_id, at, kind, exit_code, rid, duration_ms, source,
                             user_agent, method, body)
SELECT id, monitor_id, at, kind, exit_code, rid, duration_ms, source, user_agent, method, body
FROM heartbeat_pings_unpartitioned;
DROP TABLE heartbeat_pings_unpartitioned;

-- Keys and indexes after the copy: one build per partition instead of a check per row.
-- A unique key on a partitioned table must hold the partition key. Ids come from one
-- sequence, so they stay unique as before; pings had and have no other unique key (every
-- received ping is stored). The key doubles as the history index: a heartbeat's pings
-- newest first, with (at, id) as the page cursor.
ALTER TABLE heartbeat_pings ADD CONSTRAINT heartbeat_pings_pkey PRIMARY KEY (monitor_id, at, id);
ALTER TABLE heartbeat_pings ADD CONSTRAINT heartbeat_pings_monitor_id_fkey
    FOREIGN KEY (monitor_id) REFERENCES monitors (id) ON DELETE CASCADE;
