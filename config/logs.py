"""Structured log lines: one JSON object per record, with the e-shop id on every record that concerns one.

Code that works for one e-shop binds its id (`with bound_eshop(eshop_id):`); every record logged inside,
ours or a library's, carries it. As a second line of defence, anything shaped like a credential is masked
before a line is written: tokens must never reach a log, whoever logs them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_eshop_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("eshop_id", default=None)

_CREDENTIALS = [
    # Authorization: Bearer …, Token …; Shoptet-Access-Token: …
    re.compile(r"(?i)(bearer\s+|token\s+|shoptet-access-token['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9._~+/=-]{8,}"),
    # access_token=…, "access_token": "…", code=…, signatureKey, client_secret
    re.compile(
        r"(?i)(['\"]?(?:access_token|oauth_token|signature_?key|client_secret|code)['\"]?\s*[:=]\s*['\"]?)"
        r"[A-Za-z0-9._~+/%=-]{8,}"
    ),
]
# Query and form parameters that grant access by themselves: the settings page's session token `t`, OAuth's
# `code` and `state`, and the form token. Also URL-encoded inside another URL (`next=%2F%3Ft%3D…`).
_ACCESS_PARAMETERS = re.compile(
    r"(?i)((?:^|[^A-Za-z0-9_]|%26|%3F)(?:t|code|state|csrf|token|access_token)(?:=|%3D))[^&\s'\"<>#]+"
)
_CREDENTIALS.extend(
    [
        _ACCESS_PARAMETERS,
        # The same parameters as JSON or Python dict keys: "t": "…", 't': '…'.
        re.compile(r"""(?i)(['"](?:t|code|state|csrf|token)['"]\s*:\s*['"])[^'"]+"""),
        # Fernet ciphertext (session tokens, secrets at rest), wherever it appears.
        re.compile(r"()gAAAAA[A-Za-z0-9_-]{20,}={0,2}"),
        # Values signed with Django's signing (`payload:timestamp:signature`, also URL-encoded), such as `state`.
        # Starts only where a run of such characters starts and never backtracks: linear on a huge value.
        re.compile(r"()(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]{8,}+(?::|%3A)[A-Za-z0-9_-]{4,}+(?::|%3A)[A-Za-z0-9_-]{20,}+"),
    ]
)
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "eshop_id"}


@contextmanager
def bound_eshop(eshop_id: int | None) -> Iterator[None]:
    """Every record logged inside the block carries `eshop_id`."""
    token = bind(eshop_id)
    try:
        yield
    finally:
        unbind(token)


def bind(eshop_id: int | None) -> contextvars.Token[int | None]:
    """`bound_eshop` for code that cannot wrap a block (Celery's task_prerun and task_postrun signals)."""
    return _eshop_id.set(eshop_id)


def unbind(token: contextvars.Token[int | None]) -> None:
    _eshop_id.reset(token)


def mask_credentials(text: str) -> str:
    for pattern in _CREDENTIALS:
        text = pattern.sub(lambda match: match.group(1) + "[masked]", text)
    return text


class CredentialMaskFilter(logging.Filter):
    """Masks credentials in a record before any handler formats it: message, extra values and traceback.

    Attached to every handler (settings LOGGING, and gunicorn's through `config.gunicorn`), so that a
    formatter that is not ours, or a `%(request)s` in a format, cannot write a session token either. An
    object passed as an extra value (Django passes the request) is replaced by its masked text: a URL in a
    request's repr carries the query string.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record)
        return True


def mask_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):
        message = None  # A bad format is logging's to report; masking the raw text is all we can do.
        record.msg = mask_credentials(str(record.msg))
    if message is not None:
        record.msg, record.args = mask_credentials(message), None
    for key, value in list(vars(record).items()):
        if key in _RESERVED or key.startswith("_") or isinstance(value, int | float | bool) or value is None:
            continue
        masked = mask_credentials(str(value))
        if not isinstance(value, str) or masked != value:
            setattr(record, key, masked)
    exc_info = record.exc_info
    if exc_info and not record.exc_text:
        # Formatted once here, masked, and reused by every formatter (logging caches it in exc_text).
        record.exc_text = logging.Formatter().formatException(exc_info)
    if record.exc_text:
        record.exc_text = mask_credentials(record.exc_text)
    if record.stack_info:
        record.stack_info = mask_credentials(record.stack_info)


class EshopContextFilter(logging.Filter):
    """Copies the bound e-shop id onto the record (an explicit `extra={"eshop_id": …}` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "eshop_id", None) is None:
            record.eshop_id = _eshop_id.get()
        return True


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_credentials(record.getMessage()),
        }
        eshop_id = getattr(record, "eshop_id", None)
        if eshop_id is not None:
            line["eshop_id"] = eshop_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value if isinstance(value, int | float | bool) else mask_credentials(str(value))
        if record.exc_text:  # set, and masked, by CredentialMaskFilter
            line["exception"] = mask_credentials(record.exc_text)
        elif record.exc_info:
            line["exception"] = mask_credentials(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


# Celery's loggers that write one INFO line per task sent, received or finished.
_TASK_LIFECYCLE_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


class PeriodicTickFilter(logging.Filter):
    """Drops the INFO lines of beat's periodic ticks (sent, received, succeeded), so a terminal shows events.

    The relays run every few seconds; their lines would bury the install, the webhook and the job that a
    reader is watching for. Warnings and errors of the same tasks pass, and so does everything when the
    root logger is at DEBUG (`-l debug`) or `show_ticks` is set (LOG_PERIODIC_TASKS=1).
    """

    def __init__(self, task_names: set[str], *, show_ticks: bool = False) -> None:
        super().__init__()
        self.task_names = task_names
        self.show_ticks = show_ticks

    def filter(self, record: logging.LogRecord) -> bool:
        if self.show_ticks or record.levelno != logging.INFO or not record.name.startswith(_TASK_LIFECYCLE_LOGGERS):
            return True
        if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
            return True
        message = record.getMessage()
        return not any(name in message for name in self.task_names)
