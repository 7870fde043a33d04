-- People who use the console (API keys stay for machines). Passwords are argon2id hashes
-- (argon2-cffi's encoded form, parameters included); a disabled user cannot log in and
-- loses every session.
CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled      boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX users_username ON users (lower(username));

-- Only a SHA-256 of each session id is kept (the id is 256 random bits, as API keys are);
-- `csrf` is the session's CSRF secret, sent back in every form and X-CSRF-Token header.
CREATE TABLE sessions (
    id_hash    text PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Who changed what: one row per state-changing request that succeeded, by an API key
-- (actor 'key:<prefix>') or a user (actor 'user:<username>'). Kept apart from the events
-- outbox: those rows drive notifications and the real-time hub, and an audit row there
-- would be one more event for every client and dispatcher to read past.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    method      text NOT NULL,
    path        text NOT NULL,
    status      integer NOT NULL,
    source      text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
