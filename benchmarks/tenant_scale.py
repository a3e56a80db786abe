"""Staff surfaces and periodic sweeps with many e-shops: every admin list, the dashboard, every REST list and
`/metrics`, and the sweeps' share of each beat tick.

Runs with DATABASE_URL (PostgreSQL) and REDIS_URL from the environment (`make bench` provisions both). Seeds
TENANT_SCALE_ESHOPS installations (10,000), TENANT_SCALE_DELIVERIES webhook deliveries and TENANT_SCALE_ORDERS
orders (1,000,000 each) straight in SQL (`INSERT … SELECT generate_series`, every column from the model), then:

- each page: the server time of one request through Django's test client (best of 3), its query count and
  its size;
- each sweep, over one simulated period of beat ticks: the time of a tick, the tasks it enqueued (into the
  real broker, purged afterwards), the peak per tick, and whether every installation was visited once.
  Every task a sweep sends makes one Shoptet listing call (plus a token call when its token is older than
  30 minutes), so the tasks per minute are the sweep's Shoptet calls per minute;
- one tick of each sweep run against a loopback fake Shoptet, its tasks one after another as one worker
  would: the Shoptet calls that minute makes, and how long the tick's work takes.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "tenant-scale-benchmark-" + "x" * 40)
os.environ["ALLOWED_HOSTS"] = "testserver"

import django  # noqa: E402 - settings come from the environment set above

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, models  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from config import sweeps  # noqa: E402
from config.celery import app  # noqa: E402
from installations.models import Installation  # noqa: E402
from sync import jobs as sync_jobs  # noqa: E402
from sync.models import Invoice, Order, SyncJob  # noqa: E402
from webhooks import registrations as webhook_registrations  # noqa: E402
from webhooks.models import WebhookDelivery  # noqa: E402

ESHOPS = int(os.environ.get("TENANT_SCALE_ESHOPS", "10000"))
DELIVERIES = int(os.environ.get("TENANT_SCALE_DELIVERIES", "1000000"))
ORDERS = int(os.environ.get("TENANT_SCALE_ORDERS", "1000000"))
INVOICES = ORDERS // 4
JOBS = ESHOPS * 2
FIRST_ESHOP_ID = 9_000_000
REPEATS = 3


def column_value(field: models.Field[Any, Any]) -> str | None:
    """An SQL expression that fills one column for row `g`, or None to leave it to NULL."""
    if field.null:
        return None
    if isinstance(field, models.DateTimeField):
        return "now() - (g % 172800) * interval '1 second'"
    if isinstance(field, models.DateField):
        return "current_date"
    if isinstance(field, models.BooleanField):
        return "true" if field.get_default() else "false"
    if isinstance(field, models.JSONField):
        return "'{}'::jsonb"
    if isinstance(field, models.BinaryField):
        return "''::bytea"
    if isinstance(field, models.UUIDField):
        return "gen_random_uuid()"
    if isinstance(field, (models.IntegerField, models.DecimalField, models.FloatField)):
        default = field.get_default()
        return str(default if isinstance(default, (int, float)) else 0)
    if isinstance(field, (models.CharField, models.TextField)):
        default = field.get_default()
        return "'" + str(default or "").replace("'", "''") + "'"
    raise TypeError(f"no seed value for {field.model.__name__}.{field.name}")


def seed(model: type[models.Model], count: int, values: dict[str, str]) -> float:
    """Insert `count` rows of `model` in one statement; `values` overrides columns by field name."""
    columns, expressions = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key and isinstance(field, models.AutoField):
            continue
        expression = values.get(field.name) if field.name in values else column_value(field)
        if expression is not None:
            columns.append(connection.ops.quote_name(str(field.column)))
            expressions.append(expression)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) "  # noqa: S608 - names from the models
            f"SELECT {', '.join(expressions)} FROM generate_series(1, {int(count)}) AS g"
        )
        cursor.execute(f"ANALYZE {model._meta.db_table}")
    return time.perf_counter() - started


def installation_of(g: str) -> str:
    """The installation id that row `g` belongs to, spread over every seeded e-shop."""
    return f"(SELECT min(id) FROM installations_installation) + ({g} % {ESHOPS})"  # noqa: S608 - constants


def seed_everything() -> None:
    taken = {
        "installations": seed(
            Installation,
            ESHOPS,
            {
                "eshop_id": f"{FIRST_ESHOP_ID} + g",
                "name": "'E-shop ' || g",
                "eshop_url": "'https://eshop-' || g || '.example.cz/'",
                "status": "'active'",
                "onboarding_status": "'done'",
                "onboarded_at": "now() - interval '30 days'",
                "last_webhook_at": "now() - (g % 3600) * interval '1 second'",
            },
        ),
        "deliveries": seed(
            WebhookDelivery,
            DELIVERIES,
            {
                "installation": installation_of("g"),
                "eshop_id": f"{FIRST_ESHOP_ID} + 1 + (g % {ESHOPS})",
                "event": "(ARRAY['order:create','order:update','invoice:create'])[1 + g % 3]",
                "event_instance": "'2026' || lpad((g % 1000000)::text, 8, '0')",
                "event_created": "now() - (g % 172800) * interval '1 second'",
                "status": "(ARRAY['processed','processed','processed','failed','ignored'])[1 + g % 5]",
                "signature_valid": "true",
                "idempotency_key": "md5(g::text)",
                "processed_at": "now() - (g % 172800) * interval '1 second' + interval '2 seconds'",
            },
        ),
        "orders": seed(
            Order,
            ORDERS,
            {
                "installation": installation_of("g"),
                "code": "'2026' || lpad(g::text, 8, '0')",
                "currency": "'CZK'",
                "total_with_vat": "(g % 10000) + 0.5",
                "creation_time": "now() - (g % 8640000) * interval '1 second'",
                "change_time": "now() - (g % 86400) * interval '1 second'",
                "email": "'customer-' || g || '@example.cz'",
                "status_name": "'Vyřizuje se'",
                "item_count": "2",
                "data": "jsonb_build_object('code', '2026' || lpad(g::text, 8, '0'), 'items', '[]'::jsonb)",
                "synced_at": "now()",
            },
        ),
        "invoices": seed(
            Invoice,
            INVOICES,
            {
                "installation": installation_of("g"),
                "code": "'FA' || lpad(g::text, 8, '0')",
                "currency": "'CZK'",
                "creation_time": "now() - (g % 8640000) * interval '1 second'",
                "data": "jsonb_build_object('code', 'FA' || g)",
                "synced_at": "now()",
            },
        ),
        "sync jobs": seed(
            SyncJob,
            JOBS,
            {
                "installation": installation_of("g"),
                "resource": "(ARRAY['orders','invoices'])[1 + g % 2]",
                "mode": "'snapshot'",
                "status": "(ARRAY['completed','completed','failed'])[1 + g % 3]",
                "shoptet_job_id": "'job-' || g",
                "finished_at": "now() - (g % 172800) * interval '1 second'",
            },
        ),
    }
    print(
        f"seeded {ESHOPS:,} e-shops, {DELIVERIES:,} deliveries, {ORDERS:,} orders, {INVOICES:,} invoices, "
        f"{JOBS:,} sync jobs in " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in taken.items())
    )


# The cheapest request through the whole stack, measured first in the same run: each page is also printed
# as a multiple of it, which a noisy machine moves much less than the milliseconds.
ceiling: list[float] = []


def measure(client: Client, label: str, url: str, headers: dict[str, str] | None = None) -> float:
    """Best of REPEATS: server time through the test client, query count and size of the answer."""
    best = float("inf")
    queries = size = status = 0
    for _ in range(REPEATS):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url, headers=headers)
            content = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined]
            elapsed = time.perf_counter() - started
        best = min(best, elapsed)
        queries, size, status = len(captured), len(content), response.status_code
    ratio = f"{best / ceiling[0]:6.1f}x healthz" if ceiling else ""
    print(f"  {label:<44} {best * 1000:8.1f} ms {ratio} {queries:4d} queries {size / 1024:8.1f} KiB  HTTP {status}")
    return best


def measure_rollup() -> None:
    """One run of the minute rollup over the seeded logs: what /metrics and the dashboard then read."""
    from rollups import services as rollups

    started = time.perf_counter()
    tally = rollups.roll_up()
    print(
        f"rollup: one run {(time.perf_counter() - started) * 1000:.1f} ms, "
        f"{sum(value for (series, _), value in tally.totals.items() if series == rollups.DELIVERIES):,.0f} "
        f"deliveries and {sum(v for (s, _), v in tally.totals.items() if s == rollups.JOBS):,.0f} jobs counted "
        f"(at most {rollups.BATCH:,} of each a run)"
    )


def measure_pages() -> None:
    logging.getLogger("axes").setLevel(logging.WARNING)  # a line per force_login otherwise
    user = get_user_model().objects.create_superuser("scale-staff", "staff@example.cz", "not-used-to-log-in")
    token = Token.objects.create(user=user)
    client = Client()
    client.force_login(user)
    some = Installation.objects.order_by("pk")[ESHOPS // 2]
    api = {"Authorization": f"Token {token.key}"}
    print("pages (best of 3, server time through the test client):")
    ceiling.append(measure(Client(), "/healthz (the ceiling: database and broker ping)", "/healthz"))
    for label, url in [
        ("admin dashboard", "/admin/"),
        ("admin installations", "/admin/installations/installation/"),
        ("admin installation page", f"/admin/installations/installation/{some.pk}/change/"),
        ("admin webhook deliveries", "/admin/webhooks/webhookdelivery/"),
        ("admin webhook deliveries, one e-shop", f"/admin/webhooks/webhookdelivery/?eshop={some.eshop_id}"),
        ("admin orders", "/admin/sync/order/"),
        ("admin orders, one e-shop", f"/admin/sync/order/?eshop={some.eshop_id}"),
        ("admin invoices", "/admin/sync/invoice/"),
        ("admin sync jobs", "/admin/sync/syncjob/"),
        ("admin sync jobs, one e-shop", f"/admin/sync/syncjob/?eshop={some.eshop_id}"),
    ]:
        measure(client, label, url)
    for label, url in [
        ("REST installations", "/api/v1/installations/"),
        ("REST one installation", f"/api/v1/installations/{some.eshop_id}/"),
        ("REST orders of one e-shop", f"/api/v1/installations/{some.eshop_id}/orders/"),
        ("REST invoices of one e-shop", f"/api/v1/installations/{some.eshop_id}/invoices/"),
        ("REST jobs of one e-shop", f"/api/v1/installations/{some.eshop_id}/jobs/"),
        ("REST webhook deliveries", "/api/v1/webhook-deliveries/"),
        ("REST webhook deliveries, one e-shop", f"/api/v1/webhook-deliveries/?eshop_id={some.eshop_id}"),
    ]:
        measure(Client(), label, url, api)
    measure(Client(), "/metrics", "/metrics")


def sweep_ticks(name: str, period: timedelta, tick_body: Any) -> None:
    """Run one period of a sweep's beat ticks, each at its own simulated minute; enqueue into the broker."""
    from celery.signals import before_task_publish

    population = Installation.objects.filter(status=Installation.Status.ACTIVE).count()
    start = timezone.now()
    visited: Counter[int] = Counter()
    durations, per_tick, published = [], [], [0]

    def count(**_: Any) -> None:
        published[0] += 1

    before_task_publish.connect(count)
    messages = []
    try:
        for index in range(max(1, int(period / sweeps.settings.SWEEP_TICK))):
            share = sweeps.slice_at(period, population=population, moment=start + index * sweeps.settings.SWEEP_TICK)
            published[0] = 0
            started = time.perf_counter()
            ids = tick_body(share)
            durations.append(time.perf_counter() - started)
            per_tick.append(len(ids))
            messages.append(published[0])
            visited.update(ids)
    finally:
        before_task_publish.disconnect(count)
    app.control.purge()
    print(
        f"  {name:<34} {len(durations):3d} ticks: tick p50 {sorted(durations)[len(durations) // 2] * 1000:6.1f} ms, "
        f"max {max(durations) * 1000:6.1f} ms; messages the tick sends max {max(messages):,}; e-shops per tick max "
        f"{max(per_tick):,} (= the most Shoptet listing calls in a minute); e-shops visited {len(visited):,} of "
        f"{population:,}, each {min(visited.values(), default=0)}-{max(visited.values(), default=0)} times"
    )


def watch(task: Any, share: sweeps.Slice) -> list[int]:
    """What webhooks.tasks.watch_registrations and watch_notifications do at a tick, for the given slice."""
    ids = webhook_registrations.installations_to_watch(share=share)
    sweeps.send_each(task, ids)
    return ids


def changes(share: sweeps.Slice) -> list[int]:
    """What sync.tasks.sync_changes_everywhere does at a tick, for the given slice."""
    from sync import tasks as sync_tasks

    ids = sync_jobs.installations_to_reconcile(share=share)
    sweeps.send_each(sync_tasks.request_changes, ids)
    sync_jobs.prune_jobs()
    return ids


def measure_sweeps() -> None:
    from django.conf import settings

    from webhooks import tasks as webhook_tasks

    print(f"sweeps over {ESHOPS:,} active e-shops (one simulated period each, tick {settings.SWEEP_TICK}):")
    sweep_ticks(
        "registration watchdog",
        settings.REGISTRATION_WATCH_PERIOD,
        lambda share: watch(webhook_tasks.reconcile_webhooks, share),
    )
    sweep_ticks(
        "notification-log recovery",
        settings.NOTIFICATION_WATCH_PERIOD,
        lambda share: watch(webhook_tasks.recover_notifications, share),
    )
    sweep_ticks("/changes reconciliation", settings.CHANGES_SWEEP_PERIOD, changes)


def one_tick_against_the_fake() -> None:
    """Each sweep's share of one tick, run as one worker process would (every task it sends, and the tasks
    those send, one after another in this process) against a loopback fake Shoptet: the calls one minute
    makes at Shoptet, and whether a single worker gets through them within the minute."""
    from django.conf import settings

    from config.celery import app
    from installations import services as installation_services
    from shoptet_api import tokens
    from sync import tasks as sync_tasks
    from tests.fakes.shoptet import FakeShoptet
    from webhooks import tasks as webhook_tasks

    population = Installation.objects.filter(status=Installation.Status.ACTIVE).count()
    now = timezone.now()
    sweeps_to_run = [
        (
            "registration watchdog",
            settings.REGISTRATION_WATCH_PERIOD,
            webhook_registrations.installations_to_watch,
            webhook_tasks.reconcile_webhooks,
        ),
        (
            "notification-log recovery",
            settings.NOTIFICATION_WATCH_PERIOD,
            webhook_registrations.installations_to_watch,
            webhook_tasks.recover_notifications,
        ),
        (
            "/changes reconciliation",
            settings.CHANGES_SWEEP_PERIOD,
            sync_jobs.installations_to_reconcile,
            sync_tasks.request_changes,
        ),
    ]
    print(f"one tick of each sweep against a loopback fake Shoptet ({population:,} active e-shops, one worker):")
    client_id, client_secret = "scale-client", secrets.token_hex(16)
    with FakeShoptet(client_id=client_id, client_secret=client_secret) as fake:
        settings.SHOPTET_CLIENT_ID, settings.SHOPTET_CLIENT_SECRET = client_id, client_secret
        settings.SHOPTET_PARTNER_URL, settings.SHOPTET_API_URL = fake.partner_url, fake.api_url
        settings.PUBLIC_URL = "https://platform.example.cz"
        app.conf.task_always_eager = True  # what a task sends runs at once, as the next task of the worker
        logging.disable(logging.INFO)  # a line per install, call and task otherwise
        try:
            for name, period, ids_of, task in sweeps_to_run:
                ids = ids_of(share=sweeps.slice_at(period, population=population, moment=now))
                for installation in Installation.objects.filter(pk__in=ids).only("eshop_id"):
                    if installation.eshop_id not in fake.eshops:
                        fake.add_eshop(installation.eshop_id)
                    code = fake.issue_install_code(installation.eshop_id, redirect_uri=tokens.install_redirect_uri())
                    installation_services.install(code=code)
                Installation.objects.filter(pk__in=ids).update(onboarding_status=Installation.Onboarding.DONE)
                if task is sync_tasks.request_changes:
                    # An e-shop's first run only sets its cursor; the hourly runs after it read /changes.
                    for installation_id in ids:
                        task.apply(args=(installation_id,), throw=True)
                calls_before = sum(fake.stats()["requests"].values())
                started = time.perf_counter()
                for installation_id in ids:
                    task.apply(args=(installation_id,), throw=True)
                took = time.perf_counter() - started
                calls = sum(fake.stats()["requests"].values()) - calls_before
                each = max(len(ids), 1)
                print(
                    f"  {name:<34} {len(ids):4d} tasks in {took:5.1f} s ({took / each * 1000:5.1f} ms each): "
                    f"{calls:,} Shoptet calls in that minute, {calls / each:.1f} per e-shop"
                )
        finally:
            app.conf.task_always_eager = False
            logging.disable(logging.NOTSET)


def forget_everything() -> None:
    """The benchmarks share one database: leave it as empty as it was found."""
    tables = [model._meta.db_table for model in (Installation, WebhookDelivery, get_user_model())]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


def main() -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    try:
        seed_everything()
        measure_rollup()
        measure_pages()
        measure_sweeps()
        one_tick_against_the_fake()
    finally:
        forget_everything()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
