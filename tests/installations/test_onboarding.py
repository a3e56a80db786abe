"""Onboarding: identity, signature key, webhook registrations; rerunning changes nothing that is right."""

from __future__ import annotations

from datetime import timedelta

import pytest

from installations import services
from installations.models import Installation
from shoptet_api.errors import Forbidden
from tests.fakes.shoptet import FakeShoptet
from webhooks.models import WebhookRegistration

pytestmark = pytest.mark.django_db

WEBHOOK_URL = "http://testserver/shoptet/webhooks/"
EXPECTED_EVENTS = sorted(
    [
        "eshop:projectDomain",
        "invoice:create",
        "invoice:delete",
        "invoice:update",
        "job:finished",
        "order:create",
        "order:delete",
        "order:update",
    ]
)


def registered_at_shoptet(fake: FakeShoptet, eshop_id: int) -> dict[str, str]:
    return {webhook["event"]: webhook["url"] for webhook in fake.eshops[eshop_id].webhooks.values()}


def test_onboarding_stores_identity_key_and_registers_webhooks(
    installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    services.onboard(installation=installation)

    installation.refresh_from_db()
    eshop = fake_shoptet.eshops[installation.eshop_id]
    assert installation.name == eshop.name
    assert installation.timezone == "Europe/Prague"
    assert installation.oauth_url == f"{fake_shoptet.url}/eshops/{installation.eshop_id}/action/OAuthServer/"
    assert installation.webhook_signature_key == eshop.signature_key
    assert installation.onboarding_status == Installation.Onboarding.DONE
    assert installation.onboarded_at is not None
    assert registered_at_shoptet(fake_shoptet, installation.eshop_id) == dict.fromkeys(EXPECTED_EVENTS, WEBHOOK_URL)
    local = {r.event: (r.url, r.shoptet_id) for r in installation.webhook_registrations.all()}
    assert local == {
        w["event"]: (w["url"], w["id"]) for w in fake_shoptet.eshops[installation.eshop_id].webhooks.values()
    }


def test_rerunning_onboarding_changes_nothing(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    services.onboard(installation=installation)
    key = fake_shoptet.eshops[installation.eshop_id].signature_key
    ids = set(fake_shoptet.eshops[installation.eshop_id].webhooks)
    writes_before = fake_shoptet.request_count(None, r"/api/webhooks.*", methods_other_than_get=True)

    services.onboard(installation=Installation.objects.get(pk=installation.pk))

    assert fake_shoptet.eshops[installation.eshop_id].signature_key == key
    assert set(fake_shoptet.eshops[installation.eshop_id].webhooks) == ids
    assert fake_shoptet.request_count(None, r"/api/webhooks.*", methods_other_than_get=True) == writes_before
    assert Installation.objects.get(pk=installation.pk).webhook_signature_key == key


def test_onboarding_fixes_a_registration_that_points_elsewhere(
    installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    services.onboard(installation=installation)
    eshop = fake_shoptet.eshops[installation.eshop_id]
    webhook_id = next(i for i, w in eshop.webhooks.items() if w["event"] == "order:create")
    eshop.webhooks[webhook_id]["url"] = "https://staging.example.com/shoptet/webhooks/"

    services.onboard(installation=installation)

    assert registered_at_shoptet(fake_shoptet, installation.eshop_id)["order:create"] == WEBHOOK_URL
    assert webhook_id in eshop.webhooks


def test_onboarding_completes_registrations_made_by_another_run(
    installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    fake_shoptet.register_webhook(installation.eshop_id, "order:create", WEBHOOK_URL)

    services.onboard(installation=installation)

    assert registered_at_shoptet(fake_shoptet, installation.eshop_id) == dict.fromkeys(EXPECTED_EVENTS, WEBHOOK_URL)


def test_a_race_on_registration_converges(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    # Shoptet refuses the batch (an event exists already by the time it arrives): 422, then one by one.
    fake_shoptet.add_fault(
        "POST", r"/api/webhooks$", 422, body=None, error_code="webhook-exists", message="Webhook already exists"
    )

    services.onboard(installation=installation)

    assert registered_at_shoptet(fake_shoptet, installation.eshop_id) == dict.fromkeys(EXPECTED_EVENTS, WEBHOOK_URL)


def test_reinstall_renews_the_signature_key(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    from tests.conftest import install_via_fake

    services.onboard(installation=installation)
    first_key = fake_shoptet.eshops[installation.eshop_id].signature_key

    reinstalled = install_via_fake(fake_shoptet, installation.eshop_id)
    services.onboard(installation=reinstalled)

    second_key = fake_shoptet.eshops[installation.eshop_id].signature_key
    assert second_key != first_key
    assert Installation.objects.get(pk=installation.pk).webhook_signature_key == second_key


def test_transient_errors_are_retried_inside_the_client(
    installation: Installation, fake_shoptet: FakeShoptet, fast_backoff: None
) -> None:
    fake_shoptet.add_fault("GET", r"/api/eshop", 503, times=2)

    services.onboard(installation=installation)

    assert Installation.objects.get(pk=installation.pk).onboarding_status == Installation.Onboarding.DONE


def test_configuration_errors_are_not_retried(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    fake_shoptet.add_fault("GET", r"/api/eshop", 403, error_code="invalid-token-no-rights", message="No rights")

    with pytest.raises(Forbidden):
        services.onboard(installation=installation)

    assert fake_shoptet.request_count("GET", r"/api/eshop") == 1


def test_onboarding_one_eshop_leaves_the_other_alone(
    installation: Installation, other_installation: Installation, fake_shoptet: FakeShoptet
) -> None:
    services.onboard(installation=installation)

    assert registered_at_shoptet(fake_shoptet, other_installation.eshop_id) == {}
    assert not WebhookRegistration.objects.filter(installation=other_installation).exists()
    assert Installation.objects.get(pk=other_installation.pk).webhook_signature_key == ""
    assert Installation.objects.get(pk=other_installation.pk).onboarding_status == "pending"


def test_suspended_installations_are_not_onboarded(installation: Installation, fake_shoptet: FakeShoptet) -> None:
    installation.transition_to(Installation.Status.SUSPENDED, cause="test")

    services.onboard(installation=installation)

    assert fake_shoptet.request_count(None, r"/api/.*") == 0


def test_relay_claims_pending_installs_once(installation: Installation, other_installation: Installation) -> None:
    claimed = services.claim_pending_onboarding(stale_after=timedelta(hours=2))

    assert sorted(claimed) == sorted([installation.pk, other_installation.pk])
    assert services.claim_pending_onboarding(stale_after=timedelta(hours=2)) == []
    enqueued_at = Installation.objects.get(pk=installation.pk).onboarding_enqueued_at
    assert enqueued_at is not None
    Installation.objects.filter(pk=installation.pk).update(onboarding_enqueued_at=enqueued_at - timedelta(hours=3))
    assert services.claim_pending_onboarding(stale_after=timedelta(hours=2)) == [installation.pk]


def test_relay_skips_done_and_inactive_installs(installation: Installation, other_installation: Installation) -> None:
    Installation.objects.filter(pk=installation.pk).update(onboarding_status=Installation.Onboarding.DONE)
    other_installation.transition_to(Installation.Status.SUSPENDED, cause="test")

    assert services.claim_pending_onboarding(stale_after=timedelta(hours=2)) == []
