"""The Responses API (SPEC §9): translation to and from chat completions, and the normaliser
that puts a native upstream's answers into OpenAI's exact shape."""
