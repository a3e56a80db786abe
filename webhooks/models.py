"""What Shoptet sends us: the webhooks registered for each installation, every delivery, and drift."""

from __future__ import annotations

import json

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Substr
from django.utils.timezone import now

from installations.models import Installation

# Length of the eventInstance prefix that is indexed (see WebhookDelivery.Meta.indexes).
INSTANCE_PREFIX = 128
# The longest error text stored on a delivery or a registration drift.
MAX_ERROR_LENGTH = 4000


class WebhookRegistration(models.Model):
    """A webhook registered at Shoptet for one installation, as Shoptet last confirmed it."""

    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="webhook_registrations")
    event = models.CharField(max_length=64)
    shoptet_id = models.PositiveBigIntegerField()
    url = models.URLField(max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["installation", "event"]
        constraints = [
            models.UniqueConstraint(fields=["installation", "event"], name="webhook_registration_unique_event"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.url}"


class WebhookDeliveryQuerySet(models.QuerySet["WebhookDelivery"]):
    def with_instance(self, instance: str) -> WebhookDeliveryQuerySet:
        """Filter on eventInstance through its indexed prefix."""
        return self.annotate(instance_prefix=Substr("event_instance", 1, INSTANCE_PREFIX)).filter(
            instance_prefix=instance[:INSTANCE_PREFIX], event_instance=instance
        )

    def count_pending(self, *, up_to: int) -> int:
        """Deliveries received and not yet processed, through the partial index of received rows, counted
        up to `up_to`: the cost stays bounded whatever the backlog."""
        return self.filter(status=WebhookDelivery.Status.RECEIVED).values("pk")[:up_to].count()


class WebhookDelivery(models.Model):
    """One call of the webhook endpoint, valid or not; also the outbox its processing is relayed from."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        IGNORED = "ignored", "Ignored"

    class Source(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        NOTIFICATION_LOG = "notification-log", "Recovered from Shoptet's notification log"

    # Indexed through delivery_entity and delivery_idempotency, which both lead with it.
    installation = models.ForeignKey(
        Installation, null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_deliveries", db_index=False
    )
    # As sent, also when no installation matches it.
    eshop_id = models.PositiveBigIntegerField(null=True, blank=True)
    event = models.CharField(max_length=64, blank=True)
    event_instance = models.TextField(blank=True)
    event_created = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=now)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.WEBHOOK)

    # A rejected or ignored delivery keeps only a prefix of its body; length and digest are of the whole body.
    body = models.BinaryField(blank=True, default=b"")
    body_length = models.PositiveIntegerField(null=True, blank=True)
    body_sha256 = models.CharField(max_length=64, blank=True)
    body_truncated = models.BooleanField(default=False)
    payload_purged_at = models.DateTimeField(null=True, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    # None: not signed by nature (recovered through the authenticated API).
    signature_valid = models.BooleanField(null=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # Outbox: the relay enqueues received deliveries whose time has come (retries wait here, not in the broker).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=64, blank=True)
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # Set by a replay: process even though the same event was processed before.
    replay_requested = models.BooleanField(default=False)
    replayed_at = models.DateTimeField(null=True, blank=True)

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["-received_at", "-id"], name="delivery_received"),
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due",
                condition=Q(status="received"),
            ),
            # Every INSERT of the endpoint maintains each index below, so each one serves a query that needs it.
            # eventInstance of a mass event can be long; a btree takes a bounded prefix of it. Led by the
            # instance, one index serves both processing (installation, event, instance: all equalities) and
            # the admin's search by instance alone.
            models.Index(
                Substr("event_instance", 1, INSTANCE_PREFIX), F("installation"), F("event"), name="delivery_entity"
            ),
            models.Index(fields=["installation", "idempotency_key"], name="delivery_idempotency"),
            models.Index(fields=["eshop_id", "-received_at"], name="delivery_eshop"),
            # The admin's and the API's status filter and the purge of rejected rows. Only the rare statuses:
            # received rows are found through delivery_due, and processed ones (most of the log) through
            # delivery_received at once.
            models.Index(
                fields=["status", "-received_at"],
                name="delivery_status",
                condition=Q(status__in=["failed", "rejected", "ignored"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event or '?'} {self.event_instance[:40]} ({self.get_status_display()})"

    @property
    def pretty_body(self) -> str:
        """The raw body as indented JSON when it is JSON, else as text with undecodable bytes escaped."""
        raw = bytes(self.body or b"")
        try:
            pretty = json.dumps(json.loads(raw), indent=2, ensure_ascii=False, sort_keys=True)
            # A lone surrogate (`"\ud800"`) parses but cannot be written out as UTF-8.
            pretty.encode("utf-8")
        except (ValueError, RecursionError):
            # Anyone can post a body nested thousands deep or holding lone surrogates: show it as sent.
            return raw.decode("utf-8", "backslashreplace")
        return pretty


class RegistrationDrift(models.Model):
    """What the watchdog found different at Shoptet from the registrations we want, and what it did."""

    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="registration_drifts")
    detected_at = models.DateTimeField(default=now)
    missing = models.JSONField(default=list, blank=True, help_text="Events not registered; created again.")
    wrong_url = models.JSONField(default=list, blank=True, help_text="Events pointing elsewhere; URL fixed.")
    strays = models.JSONField(default=list, blank=True, help_text="Unwanted registrations at our URL; removed.")
    repaired = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-detected_at", "-id"]

    def __str__(self) -> str:
        return f"drift of {self.installation_id} at {self.detected_at:%Y-%m-%d %H:%M}"
