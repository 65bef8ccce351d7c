"""gunicorn settings from the same environment variables as the app (PORT, WORKERS, THREADS, LOG_LEVEL).

No preload: each worker imports `_wsgi` after fork and loads its own model there, so CUDA is
never initialised in the parent. Each worker serves with waitress (backend/web/server.py):
its I/O thread buffers whole requests, so slow clients never hold one of the THREADS request
threads, which share the worker's one model. The timeout is the worker heartbeat (the I/O
loop beats every second, whatever the requests do), above LS's 100 s /predict timeout.
"""

from backend.settings import Settings

_settings = Settings.from_env()

wsgi_app = "_wsgi:app"
bind = f"0.0.0.0:{_settings.port}"
workers = _settings.workers
threads = _settings.threads
worker_class = "backend.web.server.WaitressWorker"
# Open connections per worker, slow ones included. The only client is LS's server (a connection
# per busy thread), so 200 is ample; it bounds what unfinished requests may buffer per worker
# (~155 MiB of memory, 200 x MAX_REQUEST_BYTES of temp files: docs/ARCHITECTURE.md, "Serving:
# slow clients"). Near it the oldest unfinished requests are shed (backend/web/server.py).
worker_connections = 200
preload_app = False
timeout = 180
graceful_timeout = 30
loglevel = _settings.log_level.lower()
accesslog = None  # the app logs one line per request, with timings
errorlog = "-"
