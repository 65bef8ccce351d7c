"""Entry point: gunicorn serves `_wsgi:app` (see gunicorn.conf.py); `python _wsgi.py` runs Flask's dev server."""

from backend.web.app import create_app

app = create_app()

if __name__ == "__main__":
    from backend.settings import Settings

    app.run(host="0.0.0.0", port=Settings.from_env().port, threaded=True)
