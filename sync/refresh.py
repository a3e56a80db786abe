"""Single documents: fetching and storing one (webhooks, `/changes`), a deletion, and the runs that fetch
what webhooks named (one queued and one running per e-shop and resource).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.db.models import Q
from django.utils import timezone

from installations import toggles
from installations.models import Installation
from shoptet_api.client import ShoptetClient
from shoptet_api.errors import TRANSIENT_ERRORS, NotFound, ShoptetError, TransportError
from sync.documents import Resource, items_of, moment
from sync.models import Document, RefreshRequest

logger = logging.getLogger(__name__)

# Claimed per round, fetched up to the e-shop's request slots in parallel; a run covers REFRESH_LIMIT.
REFRESH_BATCH = 30
REFRESH_LIMIT = 600
# A run stops claiming after this long and hands on (see refresh_pending). Its running mark is renewed each
# round and lapses with the claims of a run whose worker died, so the relay's new run finds it gone.
REFRESH_RUN_SECONDS = 2.0
REFRESH_RUNNING_SECONDS = 20
# A claim older than this is a killed run's: the relay (every 10 s) hands its requests to a new run. A round
# of REFRESH_BATCH fetches is far shorter, and each round claims afresh; should a round outlast it, a second
# run fetches the same documents again, which the newer-changeTime rule makes harmless.
REFRESH_CLAIM_TTL = timedelta(seconds=20)
REFRESH_STALE = timedelta(seconds=20)

IMPORTED, SKIPPED, DELETED, ABSENT, FAILED = "imported", "skipped", "deleted", "absent", "failed"


def refresh_document(
    *, client: ShoptetClient, installation: Installation, resource: Resource, code: str, since: date | None
) -> str:
    """Fetch one document and store it; a 404 confirms a deletion. Returns what happened.

    `since` is the e-shop's import-from date (toggles.import_since), read once by the caller."""
    try:
        document = resource.fetch(client, code)
    except NotFound:
        return DELETED if mark_deleted(installation=installation, resource=resource, code=code) else ABSENT
    if not document:
        raise TransportError(f"GET /api/{resource.name}/{{code}} answered without the document")
    if not toggles.admits(since, moment(document.get("creationTime"))):
        return SKIPPED  # created before the import-from date: known only now, and not brought in
    return IMPORTED if upsert_document(installation=installation, resource=resource, document=document) else SKIPPED


def upsert_document(*, installation: Installation, resource: Resource, document: dict[str, Any]) -> bool:
    """Store one Shoptet document with its items unless ours is newer; True when it was stored."""
    values = resource.fields(document)
    code = values.pop("code")
    items = items_of(document)
    model = resource.model
    now = timezone.now()
    with transaction.atomic():
        current = model._default_manager.select_for_update().filter(installation=installation, code=code).first()
        if current is None:
            try:
                with transaction.atomic():
                    current = model._default_manager.create(
                        installation=installation, code=code, data=document, synced_at=now, **values
                    )
            except IntegrityError:  # created by a concurrent worker since the look above
                current = model._default_manager.select_for_update().get(installation=installation, code=code)
                if not _replace(current, values, document, now):
                    return False
        elif not _replace(current, values, document, now):
            return False
        item_model = resource.item_model
        item_model._default_manager.filter(**{resource.parent_field: current}).delete()
        item_model._default_manager.bulk_create(
            [item_model(installation=installation, **{resource.parent_field: current}, **item) for item in items]
        )
    return True


def _replace(current: Document, values: dict[str, Any], document: dict[str, Any], now: datetime) -> bool:
    if not current.accepts(values["change_time"]):
        return False
    for name, value in values.items():
        setattr(current, name, value)
    current.data = document
    current.deleted_at = None
    current.synced_at = now
    current.save()
    return True


def mark_deleted(*, installation: Installation, resource: Resource, code: str, at: datetime | None = None) -> bool:
    """Mark a document deleted (Shoptet answered 404 for it); False when there was nothing to mark."""
    marked: int = resource.model._default_manager.filter(
        installation=installation, code=code, deleted_at__isnull=True
    ).update(deleted_at=at or timezone.now())
    return marked > 0


def queue_refresh(*, installation: Installation, resource: Resource, codes: Iterable[str]) -> int:
    """Note documents a webhook named; many events for one code make one fetch. The caller enqueues."""
    now = timezone.now()
    unique = sorted({code for code in codes if isinstance(code, str) and code and len(code) <= 255})
    RefreshRequest.objects.bulk_create(
        [
            RefreshRequest(installation=installation, resource=resource.name, code=code, requested_at=now)
            for code in unique
        ],
        update_conflicts=True,
        unique_fields=["installation", "resource", "code"],
        # A new event resets a running claim: the fetch in progress may have read the older state.
        update_fields=["requested_at", "claim", "claimed_at"],
    )
    return len(unique)


@dataclass
class RefreshOutcome:
    counts: dict[str, int] = field(default_factory=dict)
    more: bool = False


def refresh_pending(
    *,
    installation: Installation,
    resource: Resource,
    limit: int = REFRESH_LIMIT,
    claim: str | None = None,
    budget: float = REFRESH_RUN_SECONDS,
) -> RefreshOutcome:
    """Fetch the documents webhooks named, each once; `more` says some were left for another run.

    One run per e-shop and resource at a time (the e-shop's request slots are all it may use anyway): a
    run that finds another at work leaves the requests to it, and the one at work looks for more once it
    has let go. A run stops claiming after `limit` documents or `budget` seconds, so a burst's run hands
    the worker on to the other e-shops' tasks queued meanwhile and comes back at the end of the queue.
    `claim` names the run (its task's id): a run the database interrupted could not release what it had
    claimed, and takes those requests again when it runs once more, instead of waiting for the claim's TTL.
    """
    outcome = RefreshOutcome()
    if not installation.is_active:
        return outcome
    claim = claim or uuid.uuid4().hex
    running = refresh_running_key(installation.pk, resource.name)
    if not cache.add(running, claim, timeout=REFRESH_RUNNING_SECONDS):
        return outcome
    try:
        _refresh_rounds(installation, resource, claim, limit, time.monotonic() + budget, running, outcome)
    finally:
        if cache.get(running) == claim:
            cache.delete(running)
    outcome.more = RefreshRequest.objects.filter(installation=installation, resource=resource.name).exists()
    return outcome


def refresh_running_key(installation_id: int, resource: str) -> str:
    return f"sync:installation:{installation_id}:{resource}:refresh-running"


def _refresh_rounds(
    installation: Installation,
    resource: Resource,
    claim: str,
    limit: int,
    deadline: float,
    running: str,
    outcome: RefreshOutcome,
) -> None:
    client = ShoptetClient(installation)
    since = toggles.import_since(installation)
    processed = 0
    while processed < limit and time.monotonic() < deadline:
        cache.touch(running, REFRESH_RUNNING_SECONDS)
        requests = _claim_refreshes(installation, resource, claim, min(REFRESH_BATCH, limit - processed))
        if not requests:
            return
        done: list[tuple[str, int]] = []
        try:
            _fetch_claimed(client, installation, resource, since, requests, done)
        finally:
            fetched = {request_pk for _, request_pk in done}
            RefreshRequest.objects.filter(pk__in=fetched, claim=claim).delete()
            # Whatever was not fetched is free for the retry at once, not only when the claim expires.
            left = [request.pk for request in requests if request.pk not in fetched]
            if left:
                RefreshRequest.objects.filter(pk__in=left, claim=claim).update(claim="", claimed_at=None)
        for result, _ in done:
            outcome.counts[result] = outcome.counts.get(result, 0) + 1
        processed += len(done)


def _fetch_claimed(
    client: ShoptetClient,
    installation: Installation,
    resource: Resource,
    since: date | None,
    requests: list[RefreshRequest],
    done: list[tuple[str, int]],
) -> None:
    """Fetch and store each claimed document, adding (result, request id) to `done` for each one stored.

    Up to the e-shop's request slots run in parallel, each lane on a client and a database connection of
    its own (closed when the lane ends). Inside a transaction the fetches stay on this connection, which
    alone sees what the transaction wrote. A lane's error is raised once every lane has stopped, with
    what the others stored already in `done`.
    """
    lanes = min(settings.SHOPTET_TOKEN_CONCURRENCY, len(requests))
    if lanes <= 1 or transaction.get_connection().in_atomic_block:
        _fetch_lane(client, installation, resource, since, requests, done)
        return
    results: list[list[tuple[str, int]]] = [[] for _ in range(lanes)]

    def lane(index: int) -> None:
        try:
            _fetch_lane(
                ShoptetClient(installation), installation, resource, since, requests[index::lanes], results[index]
            )
        finally:
            db_connection.close()

    with ThreadPoolExecutor(lanes, thread_name_prefix="refresh") as pool:
        futures = [pool.submit(lane, index) for index in range(lanes)]
    for lane_results in results:
        done.extend(lane_results)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def _fetch_lane(
    client: ShoptetClient,
    installation: Installation,
    resource: Resource,
    since: date | None,
    requests: list[RefreshRequest],
    done: list[tuple[str, int]],
) -> None:
    for request in requests:
        try:
            result = refresh_document(
                client=client, installation=installation, resource=resource, code=request.code, since=since
            )
        except TRANSIENT_ERRORS:
            raise
        except ShoptetError as error:
            # Asking again will not help (no rights, installation gone): the hourly /changes read
            # brings the document once Shoptet answers for it again.
            logger.warning(
                "refresh dropped eshop_id=%s resource=%s code=%s error=%s",
                installation.eshop_id,
                resource.name,
                request.code,
                error,
            )
            result = FAILED
        done.append((result, request.pk))


def _claim_refreshes(installation: Installation, resource: Resource, claim: str, size: int) -> list[RefreshRequest]:
    now = timezone.now()
    with transaction.atomic():
        pks = list(
            RefreshRequest.objects.select_for_update(skip_locked=True)
            .filter(installation=installation, resource=resource.name)
            .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - REFRESH_CLAIM_TTL) | Q(claim=claim))
            .order_by("requested_at", "pk")
            .values_list("pk", flat=True)[:size]
        )
        RefreshRequest.objects.filter(pk__in=pks).update(claim=claim, claimed_at=now)
    return list(RefreshRequest.objects.filter(pk__in=pks, claim=claim).order_by("requested_at", "pk"))


@transaction.atomic
def claim_stale_refreshes(*, now: datetime | None = None) -> list[tuple[int, str]]:
    """The (installation, resource) pairs whose requests no run took (task lost, run killed): the relay's."""
    now = now or timezone.now()
    # A suspended e-shop's refreshes wait for addon:approve, which reads /changes anyway.
    stale_refreshes = RefreshRequest.objects.filter(installation__status=Installation.Status.ACTIVE).filter(
        Q(claimed_at__isnull=True, requested_at__lt=now - REFRESH_STALE) | Q(claimed_at__lt=now - REFRESH_CLAIM_TTL)
    )
    pairs = sorted(set(stale_refreshes.values_list("installation_id", "resource")))
    # A live run works through its e-shop's requests oldest first; they only wait their turn.
    running = cache.get_many([refresh_running_key(*pair) for pair in pairs])
    due = []
    for installation_id, resource in pairs:
        if refresh_running_key(installation_id, resource) in running:
            stale_refreshes = stale_refreshes.exclude(installation_id=installation_id, resource=resource)
        else:
            due.append((installation_id, resource))
    stale_refreshes.update(requested_at=now, claim="", claimed_at=None)
    return due
