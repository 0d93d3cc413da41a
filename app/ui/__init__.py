"""The web dashboard at /ui (server-rendered HTML parts, a little JavaScript, SVG)."""
