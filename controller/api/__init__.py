"""The REST API, the status-page site and the metrics endpoint: routes.py is the one list
of routes, one module per resource."""
