"""oai-gateway: an OpenAI-compatible gateway."""
