"""Any OpenAI-compatible server (vLLM, llama.cpp, LM Studio, OpenAI, Groq, …): kind `openai`.

The generic pass-through: whatever the client sends is the upstream's to judge, so its dialect
is every default of `Dialect`.
"""

from __future__ import annotations

from oai_gateway.providers.dialect import Dialect

DIALECT = Dialect(kind_label="OpenAI-compatible upstream")
