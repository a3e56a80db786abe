"""What each notification says, in the language of the e-shop's admin (gettext; see locale/ in this app)."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from notifications.models import Notification

Kind = Notification.Kind


@dataclass(frozen=True)
class Text:
    subject: Promise
    body: Promise


TEXTS: dict[str, Text] = {
    Kind.SYNC_FAILED: Text(
        _("Syncing your e-shop's orders or invoices failed"),
        _(
            "Syncing documents from your e-shop %(eshop)s failed, and we could not finish it automatically. "
            "The addon settings page says what failed and lets you start the sync again."
        ),
    ),
    Kind.ONBOARDING_FAILED: Text(
        _("Connecting the addon to your e-shop failed"),
        _(
            "We could not finish connecting the addon to your e-shop %(eshop)s. Until it is connected, "
            "no orders or invoices are synced. The addon settings page shows the state of the connection."
        ),
    ),
    Kind.SUSPENDED: Text(
        _("The addon was suspended"),
        _(
            "The addon was suspended in your e-shop %(eshop)s. While it is suspended nothing is synced; "
            "what changes meanwhile is synced once it is resumed."
        ),
    ),
    Kind.RESUMED: Text(
        _("The addon was resumed"),
        _("The addon was resumed in your e-shop %(eshop)s. We are now syncing what changed while it was suspended."),
    ),
    Kind.WEBHOOKS_SILENT: Text(
        _("No notifications from your e-shop for more than a day"),
        _(
            "Shoptet has sent us no notifications about your e-shop %(eshop)s for more than a day. If orders "
            "or invoices changed in that time, they may be missing here; we still check for changes every "
            "hour. The addon settings page shows when we last heard from Shoptet."
        ),
    ),
}

SIGNATURE = _("Open the addon settings: %(link)s")
FOOTER = _("You get this e-mail because this address is set as the notification e-mail in the addon settings.")


def compose(*, kind: str, eshop: str, link: str) -> tuple[str, str]:
    """Subject and plain-text body of a notification, in the active language."""
    text = TEXTS[kind]
    body = "\n\n".join([str(text.body) % {"eshop": eshop}, str(SIGNATURE) % {"link": link}, str(FOOTER)])
    return str(text.subject), body + "\n"
