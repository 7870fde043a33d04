"""Public status pages, one module per concern: config (what a page may be set to), access
(passwords, cookies, visibility, subscribe limits), cache (per-controller renderings), model
(what a visitor sees), posts (incident posts and their events), subscribers (subscribing
and the notices subscribers receive), html (rendering, with templates/: the page, archive,
Atom feed, badges), static/ (CSS and JS).

HTTP lives in api/status_pages.py (admin) and api/public_pages.py (the anonymous site), SQL
in storage/status_pages.py."""
