"""Logs, metrics, tracing, redaction and what is known about one request."""
