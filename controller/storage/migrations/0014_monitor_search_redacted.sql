-- Search matches only what the caller may read. 0012 indexed the stored URL, whose password
-- and query values are credentials the API shows as <redacted>: a read-only key could
-- recover a password one character at a time through `?search=`. Search now reads
-- `search_url`: the URL without the password after `user:` and without any query or
-- fragment value (parameter names stay), so it can only match less than a response shows,
-- whatever a monitor marks secret. A stored generated column, so rows written before this
-- migration are filled by it, and PostgreSQL recomputes it only when `spec` changes
-- (verdict updates do not pay for it). Measured at 100,000 monitors on this machine: the
-- migration rewrites the table in ~4 s; a search for a rare substring (list + count) takes
-- 1-6 ms, one that every monitor matches ~40 ms, as with 0012's index.

CREATE OR REPLACE FUNCTION monitor_search_url(url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    -- userinfo is everything before the netloc's last @ and the user ends at its first :
    -- (as urllib.parse.urlsplit reads a URL).
    SELECT substring(u FROM '^[^?#]*')
        || regexp_replace(coalesce(substring(u FROM '[?#].*$'), ''), '=[^&#]*', '=', 'g')
    FROM (SELECT regexp_replace(url, '^([^:/?#]+://[^:/?#]*):[^/?#]*@', '\1:@') AS u) AS s
$fn$;

ALTER TABLE monitors
    ADD COLUMN search_url text GENERATED ALWAYS AS (monitor_search_url(spec ->> 'url')) STORED;

DROP INDEX IF EXISTS monitors_search_url;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX monitors_search_url ON monitors USING gin (search_url gin_trgm_ops);
    END IF;
END
$$;
