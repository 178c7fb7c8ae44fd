"""OpenAI's request schemas (SPEC §5), declared once as msgspec structs, and the check against them.

Every field `CreateChatCompletionRequest`, `CreateCompletionRequest` and `CreateEmbeddingRequest`
define in OpenAI's spec (tests/data/openai-openapi.yaml) is declared here with its type and range;
a test compares the declared fields with the spec's, so a field the spec adds shows up as a
failure until it is declared. The structs only check: the body that goes upstream is the client's
own, and fields (or keys inside known objects) that are not declared are not looked at.

Deliberate leniencies: `null` is accepted for every optional field (OpenAI's SDKs and their
wrappers send it for "not set" on more fields than the spec marks nullable), and objects whose
inside is the upstream's business (JSON schemas, tool parameters, web search and moderation
options) are only checked for being objects.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

import msgspec
from msgspec import Meta, Struct

from oai_gateway.errors import InvalidRequestError

# -- shared pieces ------------------------------------------------------------------------------

Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
Choices = Annotated[int, Meta(ge=1, le=128)]
Stop: TypeAlias = str | Annotated[list[str], Meta(min_length=1, max_length=4)]
LogitBias = dict[str, Annotated[int, Meta(ge=-100, le=100)]]
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=512)]],
    Meta(max_length=16),
]
Object = dict[str, Any]


class StreamOptions(Struct):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# -- message content parts (tagged by `type`) ---------------------------------------------------


class TextPart(Struct, tag_field="type", tag="text"):
    text: str
    prompt_cache_breakpoint: Object | None = None


class ImageURL(Struct):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Struct, tag_field="type", tag="image_url"):
    image_url: ImageURL
    prompt_cache_breakpoint: Object | None = None


class InputAudio(Struct):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(Struct, tag_field="type", tag="input_audio"):
    input_audio: InputAudio
    prompt_cache_breakpoint: Object | None = None


class FileData(Struct):
    filename: str | None = None
    file_data: str | None = None
    file_id: str | None = None


class FilePart(Struct, tag_field="type", tag="file"):
    file: FileData
    prompt_cache_breakpoint: Object | None = None


class RefusalPart(Struct, tag_field="type", tag="refusal"):
    refusal: str


TextContent: TypeAlias = str | Annotated[list[TextPart], Meta(min_length=1)]
UserContent: TypeAlias = (
    str | Annotated[list[TextPart | ImagePart | AudioPart | FilePart], Meta(min_length=1)]
)
AssistantContent: TypeAlias = str | Annotated[list[TextPart | RefusalPart], Meta(min_length=1)]

# -- messages (tagged by `role`) ----------------------------------------------------------------


class FunctionCall(Struct):
    name: str
    arguments: str


class FunctionToolCall(Struct, tag_field="type", tag="function"):
    id: str
    function: FunctionCall


class CustomCall(Struct):
    name: str
    input: str


class CustomToolCall(Struct, tag_field="type", tag="custom"):
    id: str
    custom: CustomCall


class AudioReference(Struct):
    id: str


class DeveloperMessage(Struct, tag_field="role", tag="developer"):
    content: TextContent
    name: str | None = None


class SystemMessage(Struct, tag_field="role", tag="system"):
    content: TextContent
    name: str | None = None


class UserMessage(Struct, tag_field="role", tag="user"):
    content: UserContent
    name: str | None = None


class AssistantMessage(Struct, tag_field="role", tag="assistant"):
    content: AssistantContent | None = None
    refusal: str | None = None
    name: str | None = None
    audio: AudioReference | None = None
    tool_calls: list[FunctionToolCall | CustomToolCall] | None = None
    function_call: FunctionCall | None = None


class ToolMessage(Struct, tag_field="role", tag="tool"):
    content: TextContent
    tool_call_id: str


class FunctionMessage(Struct, tag_field="role", tag="function"):
    content: str | None
    name: str


Message: TypeAlias = (
    DeveloperMessage
    | SystemMessage
    | UserMessage
    | AssistantMessage
    | ToolMessage
    | FunctionMessage
)

# -- tools, tool choice, response format --------------------------------------------------------


class FunctionDefinition(Struct):
    name: str
    description: str | None = None
    parameters: Object | None = None
    strict: bool | None = None


class FunctionTool(Struct, tag_field="type", tag="function"):
    function: FunctionDefinition


class CustomDefinition(Struct):
    name: str
    description: str | None = None
    format: Object | None = None


class CustomTool(Struct, tag_field="type", tag="custom"):
    custom: CustomDefinition


class Named(Struct):
    name: str


class NamedFunctionChoice(Struct, tag_field="type", tag="function"):
    function: Named


class NamedCustomChoice(Struct, tag_field="type", tag="custom"):
    custom: Named


class AllowedTools(Struct):
    mode: Literal["auto", "required"]
    tools: list[Object]


class AllowedToolsChoice(Struct, tag_field="type", tag="allowed_tools"):
    allowed_tools: AllowedTools


ToolChoice: TypeAlias = (
    Literal["none", "auto", "required"]
    | NamedFunctionChoice
    | NamedCustomChoice
    | AllowedToolsChoice
)


class TextFormat(Struct, tag_field="type", tag="text"):
    pass


class JsonObjectFormat(Struct, tag_field="type", tag="json_object"):
    pass


class JsonSchema(Struct):
    name: str
    description: str | None = None
    schema: Object | None = None
    strict: bool | None = None


class JsonSchemaFormat(Struct, tag_field="type", tag="json_schema"):
    json_schema: JsonSchema


class Prediction(Struct, tag_field="type", tag="content"):
    content: TextContent


class AudioOutput(Struct):
    voice: str | Object
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class Moderation(Struct):
    model: str
    policy: Object | None = None


class PromptCacheOptions(Struct):
    ttl: str | None = None
    mode: str | None = None


# -- the three request bodies -------------------------------------------------------------------


class ChatCompletionRequest(Struct):
    """`CreateChatCompletionRequest`."""

    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    metadata: Metadata | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Meta(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        None
    )
    max_completion_tokens: int | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    web_search_options: Object | None = None
    response_format: TextFormat | JsonObjectFormat | JsonSchemaFormat | None = None
    audio: AudioOutput | None = None
    store: bool | None = None
    moderation: Moderation | None = None
    stream: bool | None = None
    stop: Stop | None = None
    logit_bias: LogitBias | None = None
    logprobs: bool | None = None
    max_tokens: int | None = None
    n: Choices | None = None
    prediction: Prediction | None = None
    seed: int | None = None
    stream_options: StreamOptions | None = None
    tools: list[FunctionTool | CustomTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    function_call: Literal["none", "auto"] | Named | None = None
    functions: Annotated[list[FunctionDefinition], Meta(min_length=1, max_length=128)] | None = None


class CompletionRequest(Struct):
    """`CreateCompletionRequest`; `prompt`'s four forms are checked by `requests.input_count`."""

    model: str
    prompt: Any
    best_of: Annotated[int, Meta(ge=0, le=20)] | None = None
    echo: bool | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    max_tokens: Annotated[int, Meta(ge=0)] | None = None
    n: Choices | None = None
    presence_penalty: Penalty | None = None
    seed: int | None = None
    stop: Stop | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    user: str | None = None


class EmbeddingRequest(Struct):
    """`CreateEmbeddingRequest`; `input`'s four forms are checked by `requests.input_count`."""

    model: str
    input: Any
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None


# -- the check ------------------------------------------------------------------------------------


def _param(path: str) -> str | None:
    """The top-level field of a msgspec error path such as `$.messages[0].content`."""
    if not path.startswith("$."):
        return None
    rest = path[2:]
    end = min((i for i in (rest.find("."), rest.find("[")) if i >= 0), default=len(rest))
    return rest[:end]


def check(body: dict[str, Any], schema: type[Struct]) -> None:
    """Raise InvalidRequestError, `param` the top-level field, unless `body` fits `schema`."""
    try:
        msgspec.convert(body, schema, str_keys=True)
    except msgspec.ValidationError as exc:
        text = str(exc)
        message, _, path = text.rpartition(" - at `")
        path = path.rstrip("`")
        if not message:
            message, path = text, ""
        param = _param(path)
        where = path[2:] if param else "the request body"
        raise InvalidRequestError(f"Invalid value for '{where}': {message}.", param=param) from None
