-- Status pages, continued: secrets every controller shares, and the index behind the
-- confirmation-mail resend throttle.

-- Written once (INSERT ... ON CONFLICT DO NOTHING) by the first controller that needs it and
-- read by all, so several controllers sign and check the same cookies without configuration.
CREATE TABLE IF NOT EXISTS shared_secrets (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS status_page_notices_subscriber
    ON status_page_notices (subscriber_id, kind, created_at);
