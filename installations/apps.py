"""The tenant app: installations, their life cycle and the e-shop admin's settings rows."""

from __future__ import annotations

from django.apps import AppConfig


class InstallationsConfig(AppConfig):
    name = "installations"
    verbose_name = "Installations"

    def ready(self) -> None:
        from installations import services
        from shoptet_api.tenant import addon_refused

        # getAccessToken's word on the addon's state goes through the one life cycle.
        addon_refused.connect(services.mirror_addon_refusal, dispatch_uid="installations.mirror_addon_refusal")
