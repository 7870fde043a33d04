-- Statistics: per-minute/hour/day rollups of raw results (per monitor and region) and of
-- round verdicts (per monitor), their watermarks, and the periods uptime leaves out.
-- Rollup tables are range-partitioned by bucket so retention drops partitions:
-- minute tables by day, hour tables by month, day tables by year (controller/rollups.py
-- creates each partition before writing into it).

-- Results arrive close to due order, so a BRIN index finds a minute of results cheaply
-- and costs almost nothing on insert.
CREATE INDEX IF NOT EXISTS check_results_due_brin ON check_results USING brin (due);
CREATE INDEX IF NOT EXISTS rounds_due_brin ON rounds USING brin (due);

-- hist_idx/hist_cnt: sparse log histogram of response times (controller/storage/stats.py
-- bucket()); rt_* cover results whose status is not 'fail'.
CREATE TABLE IF NOT EXISTS stats_minute (
    monitor_id bigint NOT NULL,
    bucket     timestamptz NOT NULL,
    region     text NOT NULL,
    checks     integer NOT NULL,
    failures   integer NOT NULL,
    degraded   integer NOT NULL,
    rt_count   integer NOT NULL,
    rt_sum     double precision NOT NULL,
    rt_min     real,
    rt_max     real,
    hist_idx   smallint[] NOT NULL,
    hist_cnt   integer[] NOT NULL,
    PRIMARY KEY (monitor_id, bucket, region)
) PARTITION BY RANGE (bucket);
CREATE TABLE IF NOT EXISTS stats_hour (LIKE stats_minute INCLUDING ALL) PARTITION BY RANGE (bucket);
CREATE TABLE IF NOT EXISTS stats_day (LIKE stats_minute INCLUDING ALL) PARTITION BY RANGE (bucket);

-- Scheduled rounds (attempt 0) by verdict; `excluded` counts rounds inside a maintenance
-- or paused period, which uptime leaves out.
CREATE TABLE IF NOT EXISTS verdicts_minute (
    monitor_id bigint NOT NULL,
    bucket     timestamptz NOT NULL,
    up         integer NOT NULL,
    degraded   integer NOT NULL,
    down       integer NOT NULL,
    unknown    integer NOT NULL,
    excluded   integer NOT NULL,
    PRIMARY KEY (monitor_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE IF NOT EXISTS verdicts_hour (LIKE verdicts_minute INCLUDING ALL) PARTITION BY RANGE (bucket);
CREATE TABLE IF NOT EXISTS verdicts_day (LIKE verdicts_minute INCLUDING ALL) PARTITION BY RANGE (bucket);

-- Everything strictly before `upto` is rolled up at that level (compare-and-set).
CREATE TABLE IF NOT EXISTS stats_watermarks (
    level      text PRIMARY KEY,
    upto       timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Spans uptime leaves out: maintenance occurrences (0002) and paused spans, from the
-- monitor.paused / monitor.resumed events (open-ended while still paused).
CREATE OR REPLACE VIEW stats_excluded_periods AS
SELECT monitor_id, starts_at, ends_at, 'maintenance'::text AS kind FROM maintenance_periods
UNION ALL
SELECT p.monitor_id, p.occurred_at AS starts_at,
       COALESCE((SELECT min(r.occurred_at) FROM events r
                 WHERE r.monitor_id = p.monitor_id AND r.kind = 'monitor.resumed'
                   AND r.occurred_at >= p.occurred_at), 'infinity') AS ends_at,
       'paused'::text AS kind
FROM events p WHERE p.kind = 'monitor.paused' AND p.monitor_id IS NOT NULL;
