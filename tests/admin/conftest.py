"""The API tests' tenants (two onboarded e-shops with orders, invoices, jobs and deliveries) and staff token
for admin tests."""

from __future__ import annotations

from tests.api.conftest import staff_token, tenants

__all__ = ["staff_token", "tenants"]
