"""Event → handler registry. Addon code adds a handler in one line:

    @handles("order:create", "order:update")
    def notify_warehouse(event: WebhookEvent) -> None: ...

Handlers live in `<app>/webhook_handlers.py` (imported on start by WebhooksConfig.ready). Every handler whose
pattern matches runs, in registration order (built-in first ones ahead); an event nobody handles is recorded
as processed all the same.
A handler may raise one of shoptet_api.errors.TRANSIENT_ERRORS to have the delivery retried later; any other
exception fails the delivery with its text. A handler must be safe to run twice (a retry runs every handler
of the event again).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from installations.models import Installation
from webhooks.events import KNOWN_EVENTS


@dataclass(frozen=True)
class WebhookEvent:
    installation: Installation
    event: str  # e.g. "order:update"
    instance: str  # eventInstance as sent, as a string
    codes: tuple[str, ...]  # entity codes: (instance,) for single events; the expanded JSON list for mass events
    created: datetime  # eventCreated (aware); the newest one when a burst was coalesced
    delivery_ids: tuple[int, ...]  # the deliveries this call covers (several when a burst was coalesced)


Handler = Callable[[WebhookEvent], None]


@dataclass(frozen=True)
class Registration:
    pattern: str
    handler: Handler
    first: bool = False

    @property
    def name(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"

    def matches(self, event: str) -> bool:
        if self.pattern.endswith(":*"):
            return event.startswith(self.pattern[:-1])
        return event == self.pattern


class Registry:
    def __init__(self) -> None:
        self.registrations: list[Registration] = []

    def add(self, pattern: str, handler: Handler, *, first: bool = False) -> None:
        """Register `handler` for `pattern`; registering the same function again replaces it (module reloads)."""
        check_pattern(pattern)
        registration = Registration(pattern, handler, first=first)
        self.registrations = [
            existing
            for existing in self.registrations
            if not (existing.pattern == pattern and existing.name == registration.name)
        ]
        self.registrations.append(registration)

    def handlers_for(self, event: str) -> list[Handler]:
        """Every handler for `event`: built-in first ones, then the others."""
        matching = [registration for registration in self.registrations if registration.matches(event)]
        chosen = [r for r in matching if r.first] + [r for r in matching if not r.first]
        return list(dict.fromkeys(r.handler for r in chosen))


registry = Registry()


def check_pattern(pattern: str) -> None:
    """Refuse typos: an exact name Shoptet documents, or `<resource>:*` for a resource that has events."""
    if pattern.endswith(":*"):
        if not any(event.startswith(pattern[:-1]) for event in KNOWN_EVENTS):
            raise ValueError(f"no Shoptet event matches {pattern!r}")
    elif pattern not in KNOWN_EVENTS:
        raise ValueError(f"{pattern!r} is not a Shoptet event (exact names, or patterns like 'order:*')")


def handles(*events: str) -> Callable[[Handler], Handler]:
    """Decorator: run the function for each of `events` (exact names or `order:*`-style patterns)."""
    if not events:
        raise ValueError("handles() needs at least one event")
    for pattern in events:
        check_pattern(pattern)

    def register(handler: Handler) -> Handler:
        for pattern in events:
            registry.add(pattern, handler)
        return handler

    return register


def handles_first(*events: str) -> Callable[[Handler], Handler]:
    """Built-in handlers that must run before the others (life cycle before an addon's catch-up)."""

    def register(handler: Handler) -> Handler:
        for pattern in events:
            registry.add(pattern, handler, first=True)
        return handler

    return register


@dataclass
class BatchScope:
    """Values handlers gathered while a batch is processed, by key, and where each key's values go."""

    gathered: dict[Hashable, list[Any]] = field(default_factory=dict)
    flushes: dict[Hashable, Callable[[list[Any]], None]] = field(default_factory=dict)

    def run(self) -> None:
        gathered, self.gathered = self.gathered, {}
        for key, values in gathered.items():
            self.flushes[key](values)


_batch: ContextVar[BatchScope | None] = ContextVar("webhook_batch", default=None)


@contextmanager
def batch_scope() -> Iterator[BatchScope]:
    """While a batch of deliveries is processed: `gather` collects instead of handing over at once."""
    scope = BatchScope()
    token = _batch.set(scope)
    try:
        yield scope
    finally:
        _batch.reset(token)


def flush_batch_scope() -> None:
    """Hand over what the batch being processed gathered so far, now (before its deliveries are marked done)."""
    scope = _batch.get()
    if scope is not None:
        scope.run()


def gather(key: Hashable, values: Iterable[Any], flush: Callable[[list[Any]], None]) -> None:
    """Hand `values` to `flush` now, or add them to what the batch being processed hands `flush` once, when
    it is flushed (a burst of order events then queues every code in one statement)."""
    scope = _batch.get()
    if scope is None:
        flush(list(values))
        return
    scope.gathered.setdefault(key, []).extend(values)
    scope.flushes.setdefault(key, flush)
