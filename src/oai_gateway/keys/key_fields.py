"""The key fields an operator may set (SPEC §10.1), validated once for the admin API and the CLI.

A create or update body is converted into `KeyFields`; a field left out stays `UNSET` (an update
keeps the stored value), a field given as `null` clears it. Each field given replaces the stored
one as a whole: `limits` and `metadata` are not merged key by key, so what an update sends is
exactly what the key has afterwards.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from oai_gateway.errors import InvalidRequestError
from oai_gateway.keys.records import Budget, KeyRecord, Limits, normalise_time

_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_MAX_METADATA = 64
_MAX_METADATA_KEY = 64
_MAX_METADATA_VALUE = 512
_MAX_LIST = 256

Name = Annotated[str, msgspec.Meta(max_length=200)]
Entry = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Listed = Annotated[tuple[Entry, ...], msgspec.Meta(max_length=_MAX_LIST)]
Unset = msgspec.UnsetType
UNSET = msgspec.UNSET


class KeyFields(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a create or update body may carry; UNSET = not given."""

    name: Name | Unset = UNSET
    expires_at: str | Unset | None = UNSET
    providers: Listed | Unset | None = UNSET
    models: Listed | Unset | None = UNSET
    limits: Limits | Unset | None = UNSET
    budget: Budget | Unset | None = UNSET
    metadata: dict[str, str] | Unset | None = UNSET


def parse_fields(body: object) -> KeyFields:
    """Validate a request body; InvalidRequestError naming the field otherwise."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    try:
        fields = msgspec.convert(body, KeyFields)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(_message(exc), param=_param(str(exc))) from None
    _check_providers(fields.providers)
    _check_models(fields.models)
    _check_metadata(fields.metadata)
    if isinstance(fields.expires_at, str):
        try:
            fields = msgspec.structs.replace(fields, expires_at=normalise_time(fields.expires_at))
        except ValueError as exc:
            raise InvalidRequestError(f"expires_at: {exc}", param="expires_at") from None
    return fields


def apply_fields(record: KeyRecord, fields: KeyFields) -> KeyRecord:
    """The record with every given field replaced (None for `limits` means no limits)."""
    changes: dict[str, Any] = {
        name: getattr(fields, name)
        for name in fields.__struct_fields__
        if getattr(fields, name) is not UNSET
    }
    if changes.get("limits", Limits()) is None:
        changes["limits"] = Limits()
    if changes.get("metadata", {}) is None:
        changes["metadata"] = {}
    if changes.get("name", "") is None:  # pragma: no cover - the schema forbids it
        changes["name"] = ""
    return msgspec.structs.replace(record, **changes)


def _check_providers(providers: tuple[str, ...] | Unset | None) -> None:
    if not isinstance(providers, tuple):
        return
    for name in providers:
        if not _PROVIDER.fullmatch(name):
            raise InvalidRequestError(
                f"providers: {name[:64]!r} is not a provider name ([a-z0-9][a-z0-9_-]{{0,31}}).",
                param="providers",
            )


def _check_models(models: tuple[str, ...] | Unset | None) -> None:
    if not isinstance(models, tuple):
        return
    for entry in models:
        provider, _, model = entry.partition("/")
        if not _PROVIDER.fullmatch(provider) or (entry != provider and not model.strip()):
            raise InvalidRequestError(
                f"models: {entry[:64]!r} is neither provider/model nor a provider name.",
                param="models",
            )


def _check_metadata(metadata: dict[str, str] | Unset | None) -> None:
    if not isinstance(metadata, dict):
        return
    if len(metadata) > _MAX_METADATA:
        raise InvalidRequestError(f"metadata: at most {_MAX_METADATA} entries.", param="metadata")
    for key, value in metadata.items():
        if not key or len(key) > _MAX_METADATA_KEY or len(value) > _MAX_METADATA_VALUE:
            raise InvalidRequestError(
                f"metadata: keys are 1-{_MAX_METADATA_KEY} characters, values at most "
                f"{_MAX_METADATA_VALUE}.",
                param="metadata",
            )


def _param(text: str) -> str | None:
    """The top-level field a msgspec error is about (`$.limits.rpm` -> `limits`)."""
    path = re.search(r"at `\$\.([A-Za-z_]+)", text)
    if path:
        return path[1]
    unknown = re.search(r"unknown field `([^`]*)`", text)
    return unknown[1][:64] if unknown else None


def _message(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    param = _param(text)
    if "unknown field" in text and "at `$." not in text:
        return f"Unknown field {param!r}: a key has name, expires_at, providers, models, " + (
            "limits, budget and metadata."
        )
    return f"{param}: {text}" if param else text
