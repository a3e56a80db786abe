"""The tenant: one row per e-shop that installed the addon, and what happened to it."""

from __future__ import annotations

from django.db import models
from django.utils.timezone import now

from config.crypto import EncryptedTextField


class Installation(models.Model):
    """One e-shop that installed the addon. Every tenant row hangs off this."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        UNINSTALLED = "uninstalled", "Uninstalled"
        TERMINATED = "terminated", "Terminated"

    class Onboarding(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    eshop_id = models.PositiveBigIntegerField(unique=True, help_text="Shoptet's e-shop id (eshopId).")
    eshop_url = models.URLField(max_length=500, blank=True)
    name = models.CharField(max_length=255, blank=True)
    contact_email = models.EmailField(max_length=254, blank=True)
    timezone = models.CharField(max_length=64, blank=True)
    oauth_url = models.URLField(
        max_length=500, blank=True, help_text="The e-shop's own OAuth server (GET /api/eshop → urls[oauth])."
    )

    oauth_token = EncryptedTextField(help_text="Permanent OAuth access token from the install callback.")
    webhook_signature_key = EncryptedTextField(blank=True, default="")
    signature_key_renewed_at = models.DateTimeField(null=True, blank=True)
    # Shoptet may still sign with the key it replaced for a moment after a renewal (grace window).
    previous_webhook_signature_key = EncryptedTextField(blank=True, default="")

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    status_changed_at = models.DateTimeField(default=now)
    installed_at = models.DateTimeField(default=now)
    suspended_at = models.DateTimeField(null=True, blank=True)
    uninstalled_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)

    onboarding_status = models.CharField(max_length=16, choices=Onboarding.choices, default=Onboarding.PENDING)
    onboarding_error = models.TextField(blank=True)
    onboarding_enqueued_at = models.DateTimeField(null=True, blank=True)
    onboarded_at = models.DateTimeField(null=True, blank=True)
    last_webhook_at = models.DateTimeField(null=True, blank=True)
    # eventCreated of the last addon:* event applied: older ones arriving late change nothing.
    lifecycle_event_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["eshop_id"]
        indexes = [models.Index(fields=["status", "onboarding_status"])]

    def __str__(self) -> str:
        return f"{self.name or 'e-shop'} ({self.eshop_id})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    def transition_to(self, status: str, *, cause: str) -> bool:
        """Move to `status`, stamp its time and write the history row; False when already there.

        The stamps describe the current state: those of states the installation has left are cleared
        (a reinstall clears `uninstalled_at`), the status history keeps the past.
        """
        if self.status == status:
            return False
        moment = now()
        previous = self.status
        self.status = status
        self.status_changed_at = moment
        stamped = STAMP_OF[status]
        if status != self.Status.ACTIVE or previous != self.Status.SUSPENDED:
            setattr(self, stamped, moment)  # an approval continues the installation, it starts none
        cleared = [name for name in STATE_STAMPS if name not in STAMPS_KEPT[status]]
        for name in cleared:
            setattr(self, name, None)
        self.save(update_fields=["status", "status_changed_at", stamped, *cleared, "updated_at"])
        StatusChange.objects.create(installation=self, from_status=previous, to_status=status, cause=cause)
        return True


# When the installation entered each status: `installed_at` is when the current installation began.
STAMP_OF: dict[str, str] = {
    Installation.Status.ACTIVE: "installed_at",
    Installation.Status.SUSPENDED: "suspended_at",
    Installation.Status.UNINSTALLED: "uninstalled_at",
    Installation.Status.TERMINATED: "terminated_at",
}
STATE_STAMPS = ("suspended_at", "uninstalled_at", "terminated_at")
# The stamps that still describe each status. A terminated e-shop that had been uninstalled is still
# uninstalled; a suspension ends with the uninstall or termination that follows it.
STAMPS_KEPT: dict[str, tuple[str, ...]] = {
    Installation.Status.ACTIVE: (),
    Installation.Status.SUSPENDED: ("suspended_at",),
    Installation.Status.UNINSTALLED: ("uninstalled_at",),
    Installation.Status.TERMINATED: ("uninstalled_at", "terminated_at"),
}


class StatusChange(models.Model):
    """History of an installation's status: one row per transition, with what caused it."""

    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    cause = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.from_status or '—'} → {self.to_status}"


class InstallAttempt(models.Model):
    """Every call of the install callback, successful or not, for staff to see."""

    class Outcome(models.TextChoices):
        INSTALLED = "installed", "Installed"
        REINSTALLED = "reinstalled", "Reinstalled"
        FAILED = "failed", "Failed"

    eshop_id = models.PositiveBigIntegerField(null=True, blank=True)
    installation = models.ForeignKey(
        Installation, null=True, blank=True, on_delete=models.SET_NULL, related_name="install_attempts"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error = models.TextField(blank=True)
    # A fingerprint, never the code itself: enough to spot a reused code.
    code_fingerprint = models.CharField(max_length=16, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_outcome_display()} {self.eshop_id or ''}".strip()


class AddonSettings(models.Model):
    """What the e-shop's admin chose on the addon settings page."""

    installation = models.OneToOneField(Installation, on_delete=models.CASCADE, related_name="addon_settings")
    sync_orders = models.BooleanField(default=True)
    sync_invoices = models.BooleanField(default=True)
    import_since = models.DateField(
        null=True, blank=True, help_text="Documents created before this day are not imported; empty: all."
    )
    notification_email = models.EmailField(max_length=254, blank=True, help_text="Told when a sync fails.")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.EmailField(max_length=254, blank=True)

    class Meta:
        verbose_name_plural = "addon settings"

    def __str__(self) -> str:
        return f"settings of {self.installation_id}"

    def syncs(self, resource: str) -> bool:
        """Whether the admin wants `resource` ("orders" or "invoices") synced."""
        return bool(getattr(self, f"sync_{resource}"))


class SettingsChange(models.Model):
    """One changed value of `AddonSettings`, with the admin who changed it (Shoptet shows us no user id)."""

    installation = models.ForeignKey(Installation, on_delete=models.CASCADE, related_name="settings_changes")
    field = models.CharField(max_length=64)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)
    admin_email = models.EmailField(max_length=254)
    admin_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["installation", "-created_at"], name="settings_change_recent")]

    def __str__(self) -> str:
        return f"{self.field}: {self.old_value!r} → {self.new_value!r} by {self.admin_email}"
