-- Monitor lists at 100,000 monitors (issue 5).

-- (status, id) and (kind, id) from 0003 serve every query these served; the duplicates
-- only cost a write per status change.
DROP INDEX IF EXISTS monitors_status;
DROP INDEX IF EXISTS monitors_kind;

-- `search` (a substring of the name, URL or host) is an ILIKE '%...%': with pg_trgm it is a
-- trigram index lookup instead of a scan of every monitor. pg_trgm is a trusted extension
-- that ships with PostgreSQL; where it cannot be installed, search still works by scanning.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE NOTICE 'pg_trgm is not available: monitor search scans the table';
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX IF NOT EXISTS monitors_search_name ON monitors USING gin (name gin_trgm_ops);
        CREATE INDEX IF NOT EXISTS monitors_search_url ON monitors
            USING gin ((spec ->> 'url') gin_trgm_ops);
        CREATE INDEX IF NOT EXISTS monitors_search_host ON monitors
            USING gin ((spec ->> 'host') gin_trgm_ops);
    END IF;
END
$$;
