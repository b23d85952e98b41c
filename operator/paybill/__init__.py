"""Paybill: a Kubernetes operator for multi-tenant SaaS and a policy gate for AI agents."""

__version__ = "0.1.0"
