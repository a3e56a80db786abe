"""gunicorn settings shared by `make run`, the Docker image and the benchmarks."""

from __future__ import annotations

# The request line's query string is left out of the access log: the install callback carries
# Shoptet's one-time code there, and the settings page its OAuth code.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
accesslog = "-"
worker_class = "gthread"
threads = 4
timeout = 30
