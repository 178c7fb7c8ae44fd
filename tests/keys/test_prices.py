"""`[providers.X.prices]`: USD per million tokens per model, read from the providers file."""

from __future__ import annotations

from pathlib import Path

import pytest

from oai_gateway.config.providers_file import read_providers_file
from oai_gateway.config.settings import Price

PRICED = """
[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8081/v1"
[providers.local.prices]
"llama-3.1-8b" = { input = 0.10, output = 0.20 }
"free" = { input = 0, output = 0 }
"""


def read(tmp_path: Path, text: str) -> tuple[list[object], list[str]]:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    specs, problems = read_providers_file(path, {}, 120.0)
    return list(specs), problems


def test_prices_per_model(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(PRICED, encoding="utf-8")
    (spec,), problems = read_providers_file(path, {}, 120.0)
    assert problems == []
    assert spec.prices == {"llama-3.1-8b": Price(0.10, 0.20), "free": Price(0.0, 0.0)}


def test_no_prices_table_means_every_model_is_unpriced(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text('[providers.o]\nkind = "ollama"\n', encoding="utf-8")
    (spec,), _ = read_providers_file(path, {}, 120.0)
    assert spec.prices == {}


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ('"m" = { input = -1, output = 0 }', "prices.m.input"),
        ('"m" = { input = 1 }', "prices.m.output"),
        ('"m" = { input = 1, output = 1, cached = 0.5 }', "prices.m.cached"),
        ('"m" = { input = "cheap", output = 1 }', "prices.m.input"),
        ('"m" = 0.5', "prices.m"),
    ],
)
def test_a_bad_price_names_the_model_and_field(tmp_path: Path, entry: str, where: str) -> None:
    text = f'[providers.p]\nkind = "ollama"\n[providers.p.prices]\n{entry}\n'
    specs, problems = read(tmp_path, text)
    assert specs == []
    assert len(problems) == 1
    assert f"provider 'p': {where}" in problems[0]
