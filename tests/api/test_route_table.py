"""The route table's matching rules: sections, templates, methods, and the table's own checks."""

from __future__ import annotations

import pytest

from oai_gateway.api.exchange import Exchange, Services
from oai_gateway.api.routes import ROUTES
from oai_gateway.api.table import Auth, Route, RouteTable


async def _handler(services: Services, exchange: Exchange) -> None:
    return None


def _table(*templates: tuple[str, str, Auth]) -> RouteTable:
    return RouteTable(Route(m, t, _handler, auth=a) for m, t, a in templates)


def test_a_literal_section_is_tried_before_a_provider_section() -> None:
    table = _table(
        ("GET", "/{provider}/v1/models", Auth.GATEWAY),
        ("GET", "/admin/v1/keys/{id}", Auth.NONE),
    )
    section, rest, params = table.locate("/admin/v1/keys/k1")
    assert section.auth is Auth.NONE
    found = section.match(rest)
    assert found is not None
    assert found[1] == {"id": "k1"}
    # A path under the literal prefix never falls through to the provider section.
    section, rest, params = table.locate("/admin/v1/models")
    assert (section.auth, section.match(rest), params) == (Auth.NONE, None, {})
    section, rest, params = table.locate("/custom/v1/models")
    assert (section.auth, rest, params) == (Auth.GATEWAY, "models", {"provider": "custom"})


def test_path_parameters_take_slashes_and_colons_one_segment_parameters_do_not() -> None:
    section, rest, params = ROUTES.locate("/ollama/v1/models/library/llama3.2:latest")
    found = section.match(rest)
    assert found is not None
    methods, more = found
    assert methods.label == "/{provider}/v1/models/{model}"
    assert {**params, **more} == {"provider": "ollama", "model": "library/llama3.2:latest"}
    assert ROUTES.locate("//v1/models")[0].auth is None  # an empty name is no provider
    section, rest, _ = ROUTES.locate("/ollama/v1/models/")
    assert section.match(rest) is None


def test_routes_outside_a_section_match_whole_paths() -> None:
    section, rest, _params = ROUTES.locate("/healthz")
    found = section.match(rest)
    assert section.auth is None
    assert found is not None
    assert found[0].by_method["GET"].auth is Auth.NONE
    assert section.match("/healthz/") is None


def test_one_template_serves_several_methods() -> None:
    table = _table(
        ("GET", "/{provider}/v1/responses/{id}", Auth.GATEWAY),
        ("DELETE", "/{provider}/v1/responses/{id}", Auth.GATEWAY),
    )
    section, rest, _ = table.locate("/p/v1/responses/resp_1")
    found = section.match(rest)
    assert found is not None
    assert found[0].allow == "GET, DELETE"


def test_the_table_refuses_a_duplicate_route_and_a_section_with_two_auths() -> None:
    with pytest.raises(ValueError, match="two routes"):
        _table(("GET", "/metrics", Auth.GATEWAY), ("GET", "/metrics", Auth.NONE))
    with pytest.raises(ValueError, match="differ in auth"):
        _table(("GET", "/admin/v1/keys", Auth.NONE), ("GET", "/admin/v1/usage", Auth.GATEWAY))


@pytest.mark.parametrize(
    "path",
    [
        "/custom/v1/chat/completions",
        "/custom/v1/models/library/llama3.2:latest",
        "/admin/v1/keys/k1",
        "/admin/v1/models",
        "/custom/v1/nothing",
        "/healthz",
        "/healthz/",
        "//v1/models",
    ],
)
def test_find_is_locate_then_match_and_remembers_static_paths(path: str) -> None:
    table = RouteTable(ROUTES.routes)
    section, rest, params = table.locate(path)
    matched = section.match(rest)
    methods, more = matched if matched is not None else (None, {})
    for _ in range(2):  # found, then (for a template without parameters) remembered
        assert table.find(path) == (section, methods, {**params, **more})


def test_find_remembers_a_bounded_number_of_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("oai_gateway.api.table.KNOWN_PATHS", 2)
    table = RouteTable(ROUTES.routes)
    for name in ("a", "b", "c", "d"):
        found = table.find(f"/{name}/v1/chat/completions")
        assert found[2] == {"provider": name}
    assert len(table._known) == 2
    table = RouteTable(ROUTES.routes)
    table.find("/custom/v1/models/m1")  # a template with parameters of its own: not kept
    assert len(table._known) == 0
