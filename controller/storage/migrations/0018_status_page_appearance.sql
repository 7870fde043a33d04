-- Status pages, continued: each page's appearance (logo, colours, custom CSS, footer,
-- default theme, response times shown or not) and per-component subscriptions.

-- The logo is stored, not linked: the page's Content-Security-Policy loads images from
-- the page's own origin only, and a visitor's address never reaches a third party.
ALTER TABLE status_pages
    ADD COLUMN IF NOT EXISTS logo bytea,
    ADD COLUMN IF NOT EXISTS logo_type text,
    ADD COLUMN IF NOT EXISTS colors jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS custom_css text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS footer_text text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS theme text NOT NULL DEFAULT 'auto' CHECK (theme IN ('auto', 'light', 'dark')),
    ADD COLUMN IF NOT EXISTS show_response_times boolean NOT NULL DEFAULT false;

-- NULL: every component of the page (as before); else the components whose state changes
-- the subscriber is told about. Posts reach every subscriber of the page.
ALTER TABLE status_page_subscribers ADD COLUMN IF NOT EXISTS component_ids bigint[];
