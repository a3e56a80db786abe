"""What Shoptet sends us: the webhooks registered for each installation."""

from __future__ import annotations

from django.db import models

from installations.models import Installation


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
