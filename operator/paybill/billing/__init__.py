"""Billing: what a subscription's payment state means for the tenant's service."""
