"""Closed-loop alerts: lifecycle (model, lifecycle), durable storage (store)."""
