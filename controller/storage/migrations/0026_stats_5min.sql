-- A 5-minute rollup level between minute and hour (controller/stats/rollups.py), so the
-- 24 h statistics (a 5-minute series) read 288 buckets per region instead of 1,440 minute
-- rows, and the hour level merges 12 rows per hour instead of 60. Daily partitions, kept
-- as long as the minute level (retention_minute_days). On an existing installation the
-- rollup loop starts the level's watermark at the oldest minute partition and fills it
-- from the minute rows; until it has caught up, reads take minute rows as before.
CREATE TABLE IF NOT EXISTS stats_5min (LIKE stats_minute INCLUDING ALL) PARTITION BY RANGE (bucket);
CREATE TABLE IF NOT EXISTS verdicts_5min (LIKE verdicts_minute INCLUDING ALL) PARTITION BY RANGE (bucket);

-- Each rollup step reads one span of the level below by bucket alone (every monitor);
-- the primary key leads with monitor_id, so without these the step scanned the whole
-- partition (a day of minute rows) every time. Rows are written in bucket order, so BRIN
-- finds a span for almost nothing on insert.
CREATE INDEX IF NOT EXISTS stats_minute_bucket_brin ON stats_minute USING brin (bucket);
CREATE INDEX IF NOT EXISTS verdicts_minute_bucket_brin ON verdicts_minute USING brin (bucket);
CREATE INDEX IF NOT EXISTS stats_5min_bucket_brin ON stats_5min USING brin (bucket);
CREATE INDEX IF NOT EXISTS verdicts_5min_bucket_brin ON verdicts_5min USING brin (bucket);
CREATE INDEX IF NOT EXISTS stats_hour_bucket_brin ON stats_hour USING brin (bucket);
CREATE INDEX IF NOT EXISTS verdicts_hour_bucket_brin ON verdicts_hour USING brin (bucket);
