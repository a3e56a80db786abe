# The platform's image: one image for web (the default command), Celery workers, beat and migrations.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PORT=8000

RUN groupadd --system app && useradd --system --gid app --home-dir /app --shell /usr/sbin/nologin app

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are built into the image; the build-time values only let settings load and are not kept.
RUN SECRET_KEY=build-only-not-secret DEBUG=1 python manage.py collectstatic --noinput \
    && mkdir -p var/broker/queue var/broker/processed \
    && chown -R app:app var

USER app
EXPOSE 8000
CMD ["sh", "-c", "exec gunicorn --config python:config.gunicorn config.wsgi --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-2} --no-control-socket"]
