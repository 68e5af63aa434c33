"""The OpenAPI document of ``calibkit serve``: the request rules, stated for machines.

Every constraint written here is one the server enforces (a body that breaks it
gets a 4xx), so a schema-driven fuzzer such as schemathesis can check the server
against it. Some rules cannot be written in OpenAPI 3.0 and are enforced all the
same: the prompt's length in tokens against the model's context, the body size.
So a fuzzer's "schema-valid request rejected" check (positive data acceptance) can
fail on a prompt too long for the context; every other check applies.

Example
-------
>>> doc = openapi_schema(["llama-8b"], max_tokens_limit=16)
>>> doc["components"]["schemas"]["CompletionRequest"]["properties"]["logprobs"]["maximum"]
20
"""

from __future__ import annotations

from typing import Any, Sequence

from ..api import FIELD_RANGES
from ..version import __version__

__all__ = ["openapi_schema"]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _numeric(name: str, *, maximum: int | None = None, description: str | None = None) -> dict[str, Any]:
    """A numeric field's schema from the ranges the request validation uses (calibkit.api.FIELD_RANGES).

    ``maximum``: a server limit (ServerConfig, the logprobs cap), lowering the range's own.
    """
    r = FIELD_RANGES[name]
    out: dict[str, Any] = {"type": "integer" if r.integer else "number"}
    if r.minimum is not None:
        out["minimum"] = r.minimum
    if r.exclusive_minimum:
        out["exclusiveMinimum"] = True
    hi = r.maximum if maximum is None else maximum if r.maximum is None else min(r.maximum, maximum)
    if hi is not None:
        out["maximum"] = hi
    if description:
        out["description"] = description
    return _nullable(out)


def _error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    if headers:
        out["headers"] = headers
    return out


def openapi_schema(
    model_names: Sequence[str],
    *,
    auth: bool = True,
    logprobs_cap: int = 20,
    max_tokens_limit: int = 512,
    max_prompts: int = 64,
    max_n: int = 16,
    max_body_bytes: int = 1 << 20,
    n_ctx: int | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.0 document for a server with these models and limits.

    The numeric fields' types and bounds come from :data:`calibkit.api.FIELD_RANGES`,
    which the request validation reads too; ``version`` defaults to calibkit's own.
    """
    text = {"type": "string"}
    prompt_list = {"type": "array", "items": text, "minItems": 1, "maxItems": max_prompts}
    ctx = f" of {n_ctx} tokens" if n_ctx else ""
    request = {
        "type": "object",
        "additionalProperties": False,
        "required": ["model", "prompt"],
        # max_tokens 0 only with echo: true (OpenAPI 3.0 has no if/then).
        "anyOf": [
            {"properties": {"max_tokens": {"minimum": 1}}},
            {"properties": {"echo": {"enum": [True]}}, "required": ["echo"]},
        ],
        "description": (
            "A completions request. Numeric fields reject booleans (`logprobs: true` and "
            "`max_tokens: true` are 400 invalid_request_error); only echo and stream are booleans. "
            "Unknown fields are rejected. max_tokens may be 0 only with echo: true. The prompt "
            f"with max_tokens must fit the model's context{ctx}, else 400 with param prompt. "
            f"Bodies over {max_body_bytes} bytes are 413. A null field counts as unset."
        ),
        "properties": {
            "model": {"type": "string", "enum": list(model_names),
                      "description": "a name from GET /v1/models; another is 404 model_not_found"},
            "prompt": {"oneOf": [text, prompt_list],
                       "description": "one prompt, or a list of them (one choice per prompt and n, by index)"},
            "max_tokens": _numeric("max_tokens", maximum=max_tokens_limit,
                                   description="default 16 (or the server's limit, if lower)"),
            "logprobs": _numeric("logprobs", maximum=logprobs_cap,
                                 description="top-k log-probabilities at each position; an integer, never a boolean"),
            "echo": _nullable({"type": "boolean"}),
            "stream": _nullable({"type": "boolean",
                                 "description": "answer as server-sent events, ending with data: [DONE]"}),
            "temperature": _numeric("temperature", description="0 is greedy (so is anything below 1e-6)"),
            "top_p": _numeric("top_p"),
            "top_k": _numeric("top_k", description="-1 or 0: no top-k filter"),
            "min_p": _numeric("min_p"),
            "n": _numeric("n", maximum=max_n),
            "best_of": _numeric("best_of", maximum=max_n),
            "seed": _numeric("seed"),
            "stop": _nullable({"oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4},
            ]}),
            "presence_penalty": _numeric("presence_penalty"),
            "frequency_penalty": _numeric("frequency_penalty"),
            "repetition_penalty": _numeric("repetition_penalty", description="1 is none; must be positive"),
            "prompt_logprobs": _numeric("prompt_logprobs", maximum=logprobs_cap,
                                        description="top-k log-probabilities at each prompt position"),
        },
    }
    number_or_null = {"type": "number", "nullable": True}
    logprobs = {
        "type": "object",
        "required": ["tokens", "token_logprobs", "top_logprobs", "text_offset"],
        "properties": {
            "tokens": {"type": "array", "items": text},
            "token_logprobs": {"type": "array", "items": number_or_null},
            "top_logprobs": {"type": "array", "items": {
                "type": "object", "nullable": True, "additionalProperties": {"type": "number"}}},
            "text_offset": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
        "description": "-9999 stands for minus infinity; the first echoed token's logprob is null",
    }
    choice = {
        "type": "object",
        "required": ["index", "text", "logprobs", "finish_reason"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "text": text,
            "logprobs": {**logprobs, "nullable": True},
            "finish_reason": {"type": "string", "enum": ["stop", "length"], "nullable": True},
            "prompt_logprobs": {"type": "array", "nullable": True, "items": {
                "type": "object", "nullable": True, "additionalProperties": {"type": "number"}}},
        },
    }
    usage = {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {k: {"type": "integer", "minimum": 0}
                       for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
    }
    response = {
        "type": "object",
        "required": ["id", "object", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string", "pattern": "^cmpl-"},
            "object": {"type": "string", "enum": ["text_completion"]},
            "created": {"type": "integer"},
            "model": text,
            "choices": {"type": "array", "items": {"$ref": "#/components/schemas/Choice"}},
            "usage": {"$ref": "#/components/schemas/Usage"},
        },
    }
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": text,
                "type": text,
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }},
    }
    stream_event = {
        "type": "object",
        "required": ["data"],
        "description": "one server-sent event: data is a CompletionResponse chunk with one choice "
                       "and one token, as JSON, or [DONE] at the end",
        "properties": {"data": text, "event": text, "id": text},
    }
    model_list = {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "object", "owned_by"],
                "properties": {
                    "id": {"type": "string", "description": "the served name, the model field of a request"},
                    "object": {"type": "string", "enum": ["model"]},
                    "created": {"type": "integer"}, "owned_by": text,
                    "root": {"type": "string", "description": "the model's own name; id may be an alias of it"},
                    "weights": {"type": "string",
                                "description": "the weights that answer: a GGUF file's name, a checkpoint "
                                               "folder's, or a hub name"},
                    "backend": {"type": "string", "enum": ["llama.cpp", "transformers"],
                                "description": "what runs the weights"},
                },
            }},
        },
    }
    # 401 with or without keys: an API key in the query string is refused (keys go in the header).
    auth_errors = {"401": _error_response(
        "no API key, or one the keys file does not hold, or a key in the query string" if auth
        else "an API key in the query string (send keys in the Authorization header)"
    )}
    completions = {
        "post": {
            "operationId": "createCompletion",
            "summary": "Complete one prompt or several, with token log-probabilities",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/CompletionRequest"}}}},
            "responses": {
                "200": {"description": "the completion (a JSON object, or server-sent events with stream)",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/CompletionResponse"}},
                            # OpenAPI 3.0: the schema of an event stream describes each event.
                            "text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}},
                        }},
                "400": _error_response("invalid_request_error; param names the field"),
                **auth_errors,
                "404": _error_response("model_not_found"),
                "408": _error_response("the body did not arrive in time (shorter than its Content-Length?)"),
                "413": _error_response("the body is larger than the server accepts"),
                "415": _error_response("the body was not sent as Content-Type: application/json"),
                "503": _error_response(
                    "the request queue is full",
                    {"Retry-After": {"schema": {"type": "integer", "minimum": 1},
                                     "description": "seconds to wait before retrying"}},
                ),
            },
        }
    }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "calibkit serve: the ACS completions API",
            "version": version or __version__,
            "description": "The ACS base-model completions API over a local GGUF model. "
                           "Every error is {\"error\": {\"message\", \"type\", \"param\", \"code\"}}.",
        },
        "paths": {
            "/v1/completions": completions,
            "/v1/models": {"get": {
                "operationId": "listModels",
                "responses": {"200": {"description": "the served models", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}}},
                              **auth_errors},
            }},
            "/health": {"get": {
                "operationId": "health",
                "responses": {"200": {"description": "the server is up", "content": {
                    "application/json": {"schema": {"type": "object", "required": ["status"],
                                                    "properties": {"status": {"type": "string"}}}}}}},
            }},
        },
        "components": {"schemas": {
            "CompletionRequest": request,
            "CompletionResponse": response,
            "Choice": choice,
            "Logprobs": logprobs,
            "Usage": usage,
            "StreamEvent": stream_event,
            "ModelList": model_list,
            "ErrorResponse": error,
        }},
    }
    if auth:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "a key made with: calibkit keys create --keys-file PATH"}}
        doc["security"] = [{"bearer": []}]
        doc["paths"]["/health"]["get"]["security"] = []
    return doc
