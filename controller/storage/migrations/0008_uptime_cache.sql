-- Precomputed uptime_24h/7d/30d for the monitors API (controller/storage/uptime_cache.py).
-- Counts, not percentages: the API computes the percentage with the same Python code as
-- stats.uptimes(), so the cached value equals a fresh one at `computed_at`.
-- No foreign key: a refresh racing a monitor's delete must not fail its whole batch;
-- readers join from monitors, and the refresh deletes orphans.
CREATE TABLE IF NOT EXISTS monitor_uptimes (
    monitor_id  bigint PRIMARY KEY,
    good_24h    integer NOT NULL,  -- up + degraded rounds, not excluded
    counted_24h integer NOT NULL,  -- up + degraded + down rounds, not excluded
    good_7d     integer NOT NULL,
    counted_7d  integer NOT NULL,
    good_30d    integer NOT NULL,
    counted_30d integer NOT NULL,
    computed_at timestamptz NOT NULL,  -- the `now` the windows end at
    seen_round  timestamptz            -- monitors.last_round when computed: new data since?
);
