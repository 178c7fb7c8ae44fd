"""Several upstreams per provider, model fallbacks and circuit breakers (SPEC §11)."""
