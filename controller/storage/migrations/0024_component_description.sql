-- A status page component's description: a line of text shown under its name on the
-- public page (empty: none), set with the page's sections.
ALTER TABLE status_page_components ADD COLUMN IF NOT EXISTS description text NOT NULL DEFAULT '';
