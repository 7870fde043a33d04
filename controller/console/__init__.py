"""The operator console: server-rendered pages for people, on the same API and scopes."""
