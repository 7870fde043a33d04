-- Config as code: status pages are resources of an apply set too (their key maps to the
-- page's id, as for monitors). Regions need no row: a region's name is its key.
ALTER TABLE applied_resources DROP CONSTRAINT IF EXISTS applied_resources_kind_check;
ALTER TABLE applied_resources ADD CONSTRAINT applied_resources_kind_check
    CHECK (kind IN ('monitor', 'channel', 'rule', 'window', 'status_page'));
