"""OpenAI wire shapes: request checks, response normalisation and SSE framing."""
