-- The API's filtered lists: type and status with the id order of cursor pages
-- (GET /monitors?type=http&status=pending&tag=...&limit=100). With only (kind, id) and
-- (status, id) PostgreSQL walked the primary key and filtered ~3,000 rows for a page of
-- 101 at 100,000 monitors; this index hands it only the rows of that type and status, in
-- id order, so only the tag (and other filters) remain to check.
CREATE INDEX IF NOT EXISTS monitors_kind_status_id ON monitors (kind, status, id);
