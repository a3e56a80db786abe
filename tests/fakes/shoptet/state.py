"""Everything the fake remembers. All of it is guarded by `State.lock`; nothing here does I/O."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .clock import format_datetime
from .data import Generator

INSTALLED = "installed"
SUSPENDED = "suspended"
UNINSTALLED = "uninstalled"

# Job statuses per the spec's filter list; pending and running count as "unprocessed".
PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
UNFINISHED = (PENDING, RUNNING)


@dataclass
class OAuthToken:
    value: str
    eshop_id: int
    revoked: bool = False


@dataclass
class ApiToken:
    value: str
    eshop_id: int
    oauth_token: str
    expires_at: float
    revoked: bool = False

    def is_valid(self, now: float) -> bool:
        return not self.revoked and self.expires_at > now


@dataclass
class InstallCode:
    value: str
    eshop_id: int
    redirect_uri: str | None
    expires_at: float
    used: bool = False
    oauth_token: str | None = None  # the token this code was exchanged for


@dataclass
class AdminCode:
    """A code of the e-shop's own OAuth server (`basic_eshop` scope, admin verification)."""

    value: str
    eshop_id: int
    redirect_uri: str | None
    expires_at: float
    email: str
    name: str
    used: bool = False


@dataclass
class Notification:
    """One webhook delivery, as listed by `GET /api/webhooks/notifications`."""

    id: int
    webhook_id: int
    webhook_url: str
    event: str
    event_created: datetime
    created: datetime
    data: dict[str, Any]
    body: bytes
    signature: str
    attempted: datetime | None = None
    attempts: int = 0
    status: str = "new"
    response_status: int = 0

    # Shoptet tries a notification 3 times in total before it stops (second-hand figure, see the contract).
    max_attempts = 3

    @property
    def active(self) -> bool:
        return self.status != "success" and self.attempts < self.max_attempts

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "webhookId": self.webhook_id,
            "webhookUrl": self.webhook_url,
            "event": self.event,
            "eventCreated": format_datetime(self.event_created),
            "created": format_datetime(self.created),
            "attempted": format_datetime(self.attempted),
            "attempts": self.attempts,
            "status": self.status,
            "active": self.active,
            "data": self.data,
        }


@dataclass
class Change:
    code: str
    change_time: datetime
    change_type: str  # "edit" (creation counts as edit, per the spec) or "delete"

    def to_api(self) -> dict[str, Any]:
        return {"code": self.code, "changeTime": format_datetime(self.change_time), "changeType": self.change_type}


@dataclass
class Job:
    job_id: str
    eshop_id: int
    endpoint: str
    resource: str  # "orders" or "invoices"
    created: datetime
    status: str = PENDING
    completed: datetime | None = None
    result_url: str | None = None
    valid_until: datetime | None = None
    log: str | None = None
    detail_tries: int = 0
    fail: bool = False
    build: Callable[[], list[dict[str, Any]]] | None = field(default=None, repr=False)  # makes the result lines

    def to_api(self) -> dict[str, Any]:
        duration = None
        if self.completed is not None:
            duration = f"{(self.completed - self.created).total_seconds():.3f}"
        return {**self.to_list_item(), "duration": duration, "resultUrl": self.result_url, "log": self.log}

    def to_list_item(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "endpoint": self.endpoint,
            "creationTime": format_datetime(self.created),
            "completionTime": format_datetime(self.completed),
            "status": self.status,
            "validUntil": format_datetime(self.valid_until),
        }


@dataclass
class ResultFile:
    content: bytes  # gzip-compressed JSON Lines
    valid_until: float


@dataclass
class Fault:
    """An injected answer for the next `times` requests whose method and path match."""

    method: str | None
    path_regex: str
    status: int
    times: int = 1
    body: dict[str, Any] | list[Any] | str | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # added to the answer, injected or passed through
    delay: float = 0.0
    error_code: str | None = None  # the envelope's errorCode (or OAuth `error`) when there is no body
    message: str = "Injected fault."


@dataclass
class EshopStats:
    tokens_minted: int = 0
    max_valid_tokens: int = 0
    max_concurrent_per_token: int = 0
    rate_limited: int = 0
    bucket_refused: int = 0
    max_bucket_level: float = 0.0
    webhooks_sent: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    # The query parameters of each request, in the order of `log`: what a filter asked for.
    queries: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens_minted": self.tokens_minted,
            "max_valid_tokens": self.max_valid_tokens,
            "max_concurrent_per_token": self.max_concurrent_per_token,
            "rate_limited": self.rate_limited,
            "bucket_refused": self.bucket_refused,
            "max_bucket_level": self.max_bucket_level,
            "webhooks_sent": self.webhooks_sent,
            "requests": dict(self.requests),
            "log": list(self.log),
        }


@dataclass
class FakeEshop:
    eshop_id: int
    name: str
    url: str
    email: str
    signature_key: str
    generator: Generator
    status: str = UNINSTALLED
    oauth_tokens: list[OAuthToken] = field(default_factory=list)
    api_tokens: dict[str, ApiToken] = field(default_factory=dict)  # by token value
    webhooks: dict[int, dict[str, Any]] = field(default_factory=dict)  # by id, in the API's shape
    notifications: list[Notification] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    order_changes: dict[str, Change] = field(default_factory=dict)
    invoice_changes: dict[str, Change] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    results: dict[str, ResultFile] = field(default_factory=dict)
    stats: EshopStats = field(default_factory=EshopStats)
    fail_next_job: bool = False
    bucket_level: float = 0.0
    bucket_updated: float = 0.0

    @property
    def oauth_token(self) -> str | None:
        """The OAuth token of the current installation (None before the first install)."""
        live = [token for token in self.oauth_tokens if not token.revoked]
        return live[-1].value if live else None

    def valid_api_tokens(self, now: float) -> list[ApiToken]:
        return [token for token in self.api_tokens.values() if token.is_valid(now)]

    def webhook_for(self, event: str) -> dict[str, Any] | None:
        return next((hook for hook in self.webhooks.values() if hook["event"] == event), None)


@dataclass
class State:
    lock: threading.RLock = field(default_factory=threading.RLock)
    eshops: dict[int, FakeEshop] = field(default_factory=dict)
    oauth_tokens: dict[str, OAuthToken] = field(default_factory=dict)
    api_tokens: dict[str, ApiToken] = field(default_factory=dict)
    install_codes: dict[str, InstallCode] = field(default_factory=dict)
    admin_codes: dict[str, AdminCode] = field(default_factory=dict)
    admin_tokens: dict[str, AdminCode] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    system_webhook_url: str | None = None
    in_flight_per_token: Counter[str] = field(default_factory=Counter)
    in_flight_per_ip: Counter[str] = field(default_factory=Counter)
    locked_writes: set[str] = field(default_factory=set)
    requests: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    # Replaced by every reset: a request that began before it (a delayed fault outliving its test) is
    # neither handled against the new state nor logged in it.
    epoch: object = field(default_factory=object)
    next_webhook_id: int = 1000
    next_notification_id: int = 5000
