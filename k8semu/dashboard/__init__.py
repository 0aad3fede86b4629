"""The web dashboard: static pages served by the API servers' REST port at /dashboard/.

See docs/dashboard.md. The page is a plain REST client (list + watch); `server.py` serves its
files and the one read-only endpoint the Kubernetes API has no object for (store members).
"""
