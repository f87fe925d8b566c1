"""Paywalls Relay: a scoped, idempotent front door to the Paywalls.ai balance API."""

__version__ = "0.1.0"
