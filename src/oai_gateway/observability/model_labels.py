"""Which `model` values may become metric labels: never just whatever string a client sent.

A label is the model's own name only when the provider is known to serve it: its allow-list when
it has one, else a model the upstream has answered for with usage (an upstream rejects a model it
does not serve, so such a model gets no usage and no label). Those are remembered up to
`max_models` per provider; everything else is counted under `other`. The series per provider are
thus bounded by the allow-list or by `max_models`, however many names clients make up, and no
extra upstream call is made to learn them (a model-list refresh would cost every worker a request
against each upstream's rate limit).
"""

from __future__ import annotations

from collections.abc import Mapping

OTHER = "other"
MAX_MODELS = 64


class ModelLabels:
    def __init__(
        self, allow_lists: Mapping[str, frozenset[str] | None], *, max_models: int = MAX_MODELS
    ) -> None:
        self._allowed = {name: models for name, models in allow_lists.items() if models}
        self._served: dict[str, set[str]] = {}
        self._max = max_models

    def label(self, provider: str, model: str) -> str:
        """The label for tokens the upstream reported for `model`."""
        allowed = self._allowed.get(provider)
        if allowed is not None:
            return model if model in allowed else OTHER
        served = self._served.setdefault(provider, set())
        if model in served:
            return model
        if len(served) < self._max:
            served.add(model)
            return model
        return OTHER
