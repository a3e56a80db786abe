"""Notification e-mails to an e-shop's admins: one row per kind, e-shop and day, sent or not."""

from __future__ import annotations

from django.db import models

from installations.models import Installation


class Notification(models.Model):
    """One e-mail of one kind to one e-shop on one (e-shop local) day; the unique row is the daily cap.

    No body is stored: what the mail said follows from its kind and language, and a body would be
    personal data kept for nothing. The recipient address is kept so staff can tell who was told.
    """

    class Kind(models.TextChoices):
        SYNC_FAILED = "sync_failed", "Sync failed"
        ONBOARDING_FAILED = "onboarding_failed", "Onboarding failed"
        SUSPENDED = "suspended", "Addon suspended"
        RESUMED = "resumed", "Addon resumed"
        WEBHOOKS_SILENT = "webhooks_silent", "No webhooks for a day"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    day = models.DateField(help_text="The e-shop's local day this mail counts against.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    recipient = models.EmailField(max_length=254, blank=True)
    language = models.CharField(max_length=8, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    # The relay's lease: a pending row enqueued long ago whose task was lost is enqueued again.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["installation", "kind", "day"], name="one_notification_per_kind_and_day")
        ]
        indexes = [models.Index(fields=["status", "enqueued_at"], name="notification_pending")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.installation_id} on {self.day}"


class RecipientLanguage(models.Model):
    """The language of the admin who last saved the settings page: the one who wrote the address reads it."""

    installation = models.OneToOneField(Installation, on_delete=models.CASCADE, related_name="notification_language")
    language = models.CharField(max_length=8)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.language} for {self.installation_id}"
