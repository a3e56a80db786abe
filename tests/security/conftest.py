"""The API tests' tenants (two onboarded e-shops with orders, invoices, jobs and deliveries) for admin tests."""

from __future__ import annotations

from tests.api.conftest import tenants

__all__ = ["tenants"]
