"""gunicorn settings from the same environment variables as the app (PORT, WORKERS, THREADS, LOG_LEVEL).

No preload: each worker imports `_wsgi` after fork and loads its own model there, so CUDA is
never initialised in the parent. Threads share the worker's one model; the timeout sits above
Label Studio's 100 s /predict timeout so a cold CPU click is not killed mid-encode.
"""
from backend.settings import Settings

_settings = Settings.from_env()

wsgi_app = "_wsgi:app"
bind = f"0.0.0.0:{_settings.port}"
workers = _settings.workers
threads = _settings.threads
worker_class = "gthread"
preload_app = False
timeout = 180
graceful_timeout = 30
keepalive = 5
loglevel = _settings.log_level.lower()
accesslog = None  # the app logs one line per request, with timings
errorlog = "-"
