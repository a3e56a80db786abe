from __future__ import annotations

from django.apps import AppConfig


class ShoptetApiConfig(AppConfig):
    name = "shoptet_api"
    verbose_name = "Shoptet API"
