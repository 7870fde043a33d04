-- The fleet as resources: regions, enrollment tokens, and the credential each enrolled
-- probe holds (its NATS user public key; the seed never leaves the probe host).

CREATE TABLE regions (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    display_name text NOT NULL DEFAULT '',
    city         text NOT NULL DEFAULT '',
    country      text NOT NULL DEFAULT '',
    country_code text NOT NULL DEFAULT '',
    latitude     double precision,
    longitude    double precision,
    provider     text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each token is kept (as for api_keys); `prefix` is its first characters,
-- shown in lists and used for the lookup. A region's tokens go with it.
CREATE TABLE enrollment_tokens (
    id         bigserial PRIMARY KEY,
    region     text NOT NULL REFERENCES regions (name) ON DELETE CASCADE,
    prefix     text NOT NULL UNIQUE,
    hash       text NOT NULL,
    expires_at timestamptz NOT NULL,
    max_uses   integer CHECK (max_uses IS NULL OR max_uses > 0),
    uses       integer NOT NULL DEFAULT 0 CHECK (max_uses IS NULL OR uses <= max_uses),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX enrollment_tokens_region ON enrollment_tokens (region, id);

-- No foreign key to regions: a revoked credential must outlive its region, because the
-- revocation list NATS enforces is rebuilt from probe_revoked_keys, and a region of the same
-- name created later must not bring an old credential back.
CREATE TABLE probe_credentials (
    probe_id   text PRIMARY KEY,
    region     text NOT NULL,
    public_key text NOT NULL UNIQUE,
    host       text NOT NULL DEFAULT '',
    version    text NOT NULL DEFAULT '',
    token_id   bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX probe_credentials_region ON probe_credentials (region, probe_id);

-- Every public key NATS must refuse: revoked probes' keys, and the old key of a probe that
-- enrolled again under its id. Kept for good (a JWT may not expire); a few bytes a probe.
CREATE TABLE probe_revoked_keys (
    public_key text PRIMARY KEY,
    probe_id   text NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
