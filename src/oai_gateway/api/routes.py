"""The route table: every route the gateway serves, one line each (method, template, handler).

Templates and sections are explained in api/table.py; handlers live in api/handlers.py.
"""

from __future__ import annotations

from oai_gateway.api import handlers
from oai_gateway.api.table import Auth, Route, RouteTable
from oai_gateway.keys import admin_http
from oai_gateway.providers.base import Operation

ROUTES = RouteTable(
    [
        Route("GET", "/healthz", handlers.health, auth=Auth.NONE),
        Route("GET", "/readyz", handlers.readiness),
        Route("GET", "/metrics", handlers.metrics),
        Route("GET", "/openapi.json", handlers.openapi, auth=Auth.NONE),
        Route("POST", "/{provider}/v1/chat/completions", handlers.generate, Operation.CHAT),
        Route("POST", "/{provider}/v1/completions", handlers.generate, Operation.COMPLETIONS),
        Route("POST", "/{provider}/v1/embeddings", handlers.embeddings, Operation.EMBEDDINGS),
        Route("POST", "/{provider}/v1/responses", handlers.generate, Operation.RESPONSES),
        Route("GET", "/{provider}/v1/responses", handlers.responses_websocket),
        Route(
            "GET", "/{provider}/v1/responses/{id}", handlers.stored_response, Operation.RESPONSES
        ),
        Route(
            "DELETE", "/{provider}/v1/responses/{id}", handlers.stored_response, Operation.RESPONSES
        ),
        Route(
            "POST",
            "/{provider}/v1/responses/{id}/cancel",
            handlers.cancel_response,
            Operation.RESPONSES,
        ),
        Route(
            "GET",
            "/{provider}/v1/responses/{id}/input_items",
            handlers.response_input_items,
            Operation.RESPONSES,
        ),
        Route("GET", "/{provider}/v1/models", handlers.list_models, Operation.MODELS),
        Route(
            "GET", "/{provider}/v1/models/{model:path}", handlers.retrieve_model, Operation.MODELS
        ),
        Route("POST", "/admin/v1/keys", admin_http.create_key, auth=Auth.ADMIN),
        Route("GET", "/admin/v1/keys", admin_http.list_keys, auth=Auth.ADMIN),
        Route("GET", "/admin/v1/keys/{id}", admin_http.show_key, auth=Auth.ADMIN),
        Route("PATCH", "/admin/v1/keys/{id}", admin_http.update_key, auth=Auth.ADMIN),
        Route("DELETE", "/admin/v1/keys/{id}", admin_http.revoke_key, auth=Auth.ADMIN),
        Route("POST", "/admin/v1/keys/{id}/rotate", admin_http.rotate_key, auth=Auth.ADMIN),
        Route("GET", "/admin/v1/usage", admin_http.usage, auth=Auth.ADMIN),
    ]
)
