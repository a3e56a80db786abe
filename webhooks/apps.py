from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        # Every app's webhook_handlers module registers its handlers (webhooks.registry.handles).
        autodiscover_modules("webhook_handlers")
