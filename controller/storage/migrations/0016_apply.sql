-- Config as code (POST /api/v1/apply): which resource an apply set's stable key stands for.
-- A row is (kind, owner, key) -> the resource's id. Resources made by hand have no row, so a
-- prune (which deletes only the owner's rows' resources) never reaches them. A row whose
-- resource was deleted by hand is stale: the apply that next reads it removes it.
CREATE TABLE IF NOT EXISTS applied_resources (
    kind        text NOT NULL CHECK (kind IN ('monitor', 'channel', 'rule', 'window')),
    owner       text NOT NULL,
    key         text NOT NULL,
    resource_id bigint NOT NULL,
    PRIMARY KEY (kind, owner, key),
    UNIQUE (kind, resource_id)
);
