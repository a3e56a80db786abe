"""The command lines of the deployment, as the production stage runs them.

`docker-compose.yml` and the Dockerfile must say exactly these (test_commands_match.py); the production
stage (test_production.py) runs exactly these in a runtime-only virtualenv. Change both together.
"""

from __future__ import annotations

# Dockerfile: the image's build steps, run in /app with the virtualenv's bin first on PATH.
INSTALL = "pip install -r requirements.txt"
COLLECT_STATIC = "SECRET_KEY=build-only-not-secret DEBUG=1 python manage.py collectstatic --noinput"

# Dockerfile CMD: the web service (compose's `web` has no command of its own).
WEB = [
    "sh",
    "-c",
    "exec gunicorn --config python:config.gunicorn config.wsgi --bind 0.0.0.0:${PORT} "
    "--workers ${WEB_CONCURRENCY:-2} --no-control-socket",
]

# docker-compose.yml: one command per service that runs the platform's image.
SERVICES: dict[str, list[str]] = {
    "migrate": ["sh", "-c", "python manage.py migrate --noinput && python manage.py createcachetable"],
    "web": WEB,
    "worker-shoptet": (
        "celery -A config worker -l info -Q priority,default,shoptet --prefetch-multiplier 1 -n shoptet@%h".split()
    ),
    "worker-imports": (
        "celery -A config worker -l info -Q imports --prefetch-multiplier 1 --concurrency 2 -n imports@%h".split()
    ),
    "beat": "celery -A config beat -l info --schedule var/celerybeat-schedule".split(),
}
# Runs to its end before the others start (compose: service_completed_successfully).
ONE_OFF = ("migrate",)
