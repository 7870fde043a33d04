-- A failed result's evidence (issue 20) in a column of its own: msgpack bytes, the
-- response body as its gzip bytes (shared/evidence.py to_stored), in the result's row, so
-- it is stored and deduplicated with the result and leaves with its day's partition.
-- EXTERNAL: kept out of line as it is, never given to pglz (the body is gzip already;
-- trying cost the ingest transaction for nothing). Partitions created later take the
-- column's storage from check_results. Evidence stored before this stays in
-- details->'evidence', which readers still read (controller/storage/incidents.py).
ALTER TABLE check_results ADD COLUMN evidence bytea;
ALTER TABLE check_results ALTER COLUMN evidence SET STORAGE EXTERNAL;
