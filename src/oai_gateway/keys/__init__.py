"""Virtual keys: records, the store and its backends, limits and their enforcement (SPEC §10)."""
