-- Status pages: components grouped in sections, incident posts, subscribers and their notices.

CREATE TABLE IF NOT EXISTS status_pages (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL,
    slug             text NOT NULL UNIQUE,
    custom_domain    text UNIQUE,
    description      text NOT NULL DEFAULT '',
    is_public        boolean NOT NULL DEFAULT true,
    -- scrypt$n$r$p$salt$hash; never leaves the database through the API
    password_hash    text,
    incident_status  text CHECK (incident_status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    incident_message text,
    incident_updated_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per monitor shown on a page; `id` is the component's public id.
CREATE TABLE IF NOT EXISTS status_page_components (
    id           bigserial PRIMARY KEY,
    page_id      bigint NOT NULL REFERENCES status_pages (id) ON DELETE CASCADE,
    monitor_id   bigint NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    section      text NOT NULL DEFAULT '',
    section_pos  integer NOT NULL,
    position     integer NOT NULL,
    display_name text NOT NULL,
    UNIQUE (page_id, monitor_id)
);
CREATE INDEX IF NOT EXISTS status_page_components_monitor ON status_page_components (monitor_id);

CREATE TABLE IF NOT EXISTS status_page_posts (
    id          bigserial PRIMARY KEY,
    page_id     bigint NOT NULL REFERENCES status_pages (id) ON DELETE CASCADE,
    title       text NOT NULL,
    status      text NOT NULL CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX IF NOT EXISTS status_page_posts_page ON status_page_posts (page_id, created_at DESC);

CREATE TABLE IF NOT EXISTS status_page_post_updates (
    id         bigserial PRIMARY KEY,
    post_id    bigint NOT NULL REFERENCES status_page_posts (id) ON DELETE CASCADE,
    status     text NOT NULL,
    message    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS status_page_post_updates_post ON status_page_post_updates (post_id, id);

CREATE TABLE IF NOT EXISTS status_page_subscribers (
    id           bigserial PRIMARY KEY,
    page_id      bigint NOT NULL REFERENCES status_pages (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('email', 'webhook')),
    address      text NOT NULL,
    -- 256-bit random token: confirmation and unsubscribe links
    token        text NOT NULL UNIQUE,
    confirmed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (page_id, kind, address)
);

-- One message to one subscriber; claimed with compare-and-set so one controller sends it.
CREATE TABLE IF NOT EXISTS status_page_notices (
    id            bigserial PRIMARY KEY,
    subscriber_id bigint NOT NULL REFERENCES status_page_subscribers (id) ON DELETE CASCADE,
    kind          text NOT NULL,
    payload       jsonb NOT NULL,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    next_at       timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz
);
CREATE INDEX IF NOT EXISTS status_page_notices_due ON status_page_notices (next_at) WHERE state IN ('pending', 'sending');

-- How far the subscriber fan-out has read the events outbox (one row, locked while advancing).
CREATE TABLE IF NOT EXISTS status_page_cursor (
    name          text PRIMARY KEY,
    last_event_id bigint NOT NULL
);
INSERT INTO status_page_cursor (name, last_event_id)
SELECT 'subscribers', coalesce(max(id), 0) FROM events ON CONFLICT DO NOTHING;
