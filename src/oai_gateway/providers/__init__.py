"""Upstream providers: one module per kind behind the `Provider` protocol."""
