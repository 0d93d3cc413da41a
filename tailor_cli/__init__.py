"""`tailor`: the command line for Tailor. It speaks only the HTTP API (plus `serve`/`worker`,
which start the service itself)."""
