"""Real loopback HTTP servers speaking each upstream provider's wire protocol."""

from .base import (
    STREAM_FAULTS,
    Fault,
    FaultKind,
    RecordedRequest,
    ReplyError,
    UpstreamServer,
    openai_error_body,
)
from .cerebras import CerebrasUpstream
from .ollama import OllamaUpstream
from .openai_compat import OpenAICompatUpstream

__all__ = [
    "STREAM_FAULTS",
    "CerebrasUpstream",
    "Fault",
    "FaultKind",
    "OllamaUpstream",
    "OpenAICompatUpstream",
    "RecordedRequest",
    "ReplyError",
    "UpstreamServer",
    "openai_error_body",
]
