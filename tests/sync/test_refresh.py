"""Refresh runs under a burst: one waiting in the queue and one at work per e-shop and resource, each
bounded in time, so one e-shop's burst neither floods the queue nor takes more than its request slots."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache

from config.celery import app as celery_app
from installations.models import Installation
from sync import refresh, tasks
from sync.documents import resource_named
from sync.models import RefreshRequest
from tests.fakes.shoptet import FakeShoptet
from tests.sync.conftest import mirrored
from tests.sync.test_batches import queued_messages

pytestmark = pytest.mark.django_db

ORDERS = resource_named("orders")


@pytest.fixture
def broker() -> Iterator[None]:
    assert not celery_app.control.ping(timeout=0.5), "a Celery worker is consuming the test broker"
    list(queued_messages())
    yield
    list(queued_messages())


def refresh_messages() -> list[list[object]]:
    return [args for task, args, _ in queued_messages() if task == "sync.tasks.refresh_documents"]


def test_a_burst_of_batches_leaves_one_refresh_run_per_e_shop_in_the_queue(
    installation: Installation, other_installation: Installation, broker: None
) -> None:
    for _ in range(5):
        tasks.schedule_refresh(installation.pk, "orders")
    tasks.schedule_refresh(other_installation.pk, "orders")
    tasks.schedule_refresh(installation.pk, "invoices")

    assert sorted(map(tuple, refresh_messages())) == sorted(
        [(installation.pk, "orders"), (other_installation.pk, "orders"), (installation.pk, "invoices")]
    )


def test_requests_queued_once_the_run_left_the_queue_get_a_run_of_their_own(
    installation: Installation, broker: None
) -> None:
    tasks.schedule_refresh(installation.pk, "orders")
    assert refresh_messages() == [[installation.pk, "orders"]]

    tasks.refresh_documents.apply(args=(installation.pk, "orders"), throw=True)
    tasks.schedule_refresh(installation.pk, "orders")

    assert refresh_messages() == [[installation.pk, "orders"]]


def test_a_second_run_leaves_the_requests_to_the_run_at_work_and_holds_up_no_other_e_shop(
    onboarded: Installation, other_onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    code = fake_shoptet.create_order(onboarded.eshop_id, webhook=False)
    other_code = fake_shoptet.create_order(other_onboarded.eshop_id, webhook=False)
    refresh.queue_refresh(installation=onboarded, resource=ORDERS, codes=[code])
    refresh.queue_refresh(installation=other_onboarded, resource=ORDERS, codes=[other_code])
    running = refresh.refresh_running_key(onboarded.pk, "orders")
    assert cache.add(running, "a run at work elsewhere", timeout=20)

    second = refresh.refresh_pending(installation=onboarded, resource=ORDERS)
    other = refresh.refresh_pending(installation=other_onboarded, resource=ORDERS)

    assert second.counts == {} and not second.more
    assert RefreshRequest.objects.filter(installation=onboarded, code=code).exists()
    assert fake_shoptet.request_count("GET", rf"/api/orders/{code}") == 0
    assert cache.get(running) == "a run at work elsewhere"
    assert sum(other.counts.values()) == 1
    assert other_code in mirrored(other_onboarded, "orders")

    cache.delete(running)  # the run at work ends
    first = refresh.refresh_pending(installation=onboarded, resource=ORDERS)

    assert sum(first.counts.values()) == 1 and not first.more
    assert code in mirrored(onboarded, "orders")
    assert not RefreshRequest.objects.filter(installation=onboarded).exists()
    assert cache.get(running) is None


def test_a_run_out_of_time_hands_the_rest_back_for_the_next_run(
    onboarded: Installation, fake_shoptet: FakeShoptet
) -> None:
    codes = [fake_shoptet.create_order(onboarded.eshop_id, webhook=False) for _ in range(3)]
    refresh.queue_refresh(installation=onboarded, resource=ORDERS, codes=codes)

    spent = refresh.refresh_pending(installation=onboarded, resource=ORDERS, budget=0)

    assert spent.counts == {} and spent.more
    assert RefreshRequest.objects.filter(installation=onboarded, claim="").count() == 3
    assert cache.get(refresh.refresh_running_key(onboarded.pk, "orders")) is None

    again = refresh.refresh_pending(installation=onboarded, resource=ORDERS)

    assert sum(again.counts.values()) == 3 and not again.more
    assert set(codes) <= set(mirrored(onboarded, "orders"))
