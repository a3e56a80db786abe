"""gunicorn settings shared by `make run`, the Docker image and the benchmarks."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from config.logs import CredentialMaskFilter

# The request line's query string is left out of the access log: the install callback carries
# Shoptet's one-time code there, and the settings page its OAuth code.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
accesslog = "-"
worker_class = "gthread"
threads = 4
timeout = 30


class MaskingLogger(Logger):
    """gunicorn's access and error logs, with the credential mask of every other log line.

    The access format leaves the query string out; the mask also covers a format that puts it back
    (`%(r)s`, `%(q)s`, a Referer) and anything gunicorn's error log writes.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.addFilter(CredentialMaskFilter())


logger_class = "config.gunicorn.MaskingLogger"
