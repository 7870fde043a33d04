-- The API's filtered lists: type and status with the id order of cursor pages
-- (GET /monitors?type=http&status=pending&tag=...&limit=100). With only (kind, id) and
-- (status, id) PostgreSQL walked the primary key and filtered ~3,000 rows for a page of
-- 101 at 100,000 monitors; this index hands it only the rows of that type and status, in
-- id order, so only the tag (and other filters) remain to check.
CREATE INDEX IF NOT EXISTS monitors_kind_status_id ON monitors (kind, status, id);

-- A version of each monitor's configured columns, so a list can leave them out for the
-- monitors whose shown config a controller holds (controller/api/monitors.py SHOWN) and
-- read them only for the others. Every UPDATE that sets one of these columns (the API's,
-- or one typed straight into the database) takes a new number; status and round updates
-- (apply_verdict) set none of them and fire nothing. The sequence starts at a random
-- point; the controller still keeps versions per application (database), since a
-- database cloned from a template (as the tests make them) starts where the template did.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'monitor_config_versions') THEN
        EXECUTE format('CREATE SEQUENCE monitor_config_versions START %s',
                       1 + floor(random() * 4e18)::bigint);
    END IF;
END $$;
ALTER TABLE monitors ADD COLUMN IF NOT EXISTS config_version bigint NOT NULL DEFAULT 0;
UPDATE monitors SET config_version = nextval('monitor_config_versions');
ALTER TABLE monitors ALTER COLUMN config_version SET DEFAULT nextval('monitor_config_versions');

CREATE OR REPLACE FUNCTION monitors_config_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.config_version := nextval('monitor_config_versions');
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS monitors_config_version ON monitors;
CREATE TRIGGER monitors_config_version BEFORE UPDATE OF name, kind, spec, interval_s, timeout_s,
    locations, consensus, quorum, retry_count, recovery_count, enabled, tags, parent_id,
    incident_on_degraded, notifications, project, escalation_policy_id ON monitors
    FOR EACH ROW EXECUTE FUNCTION monitors_config_version();
