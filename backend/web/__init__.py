"""The web layer: the Flask app, its routes, request parsing, and the slow-client-safe server."""
