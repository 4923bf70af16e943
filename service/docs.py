"""The OpenAPI document and the docs page.

``openapi.yaml`` (next to this module) describes the service. It is read once, when the
blueprint is registered on an application, with ``info.version`` set to the running
voicecheck version. ``GET /openapi.json`` serves it as JSON; ``GET /docs`` renders the same
document on the server as one self-contained HTML page: inline CSS, no scripts, no fonts
or styles from elsewhere, every value escaped by Jinja's autoescape.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import yaml
from flask import Blueprint, Response, current_app, jsonify, render_template
from flask.blueprints import BlueprintSetupState
from markupsafe import Markup, escape

from voicecheck import __version__

bp = Blueprint("docs", __name__, template_folder="templates")

EXTENSION_KEY = "voicecheck.docs"
"""Where an application keeps its loaded document (and the rendered page, once asked for)."""

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
"""The docs page needs nothing but its own inline CSS."""

_REF_PREFIX = "#/components/"
_SCHEMA_PREFIX = "#/components/schemas/"


def load_document() -> dict[str, Any]:
    """Read the OpenAPI document shipped with the service.

    Returns
    -------
    dict
        The document as JSON-ready data, with ``info.version`` set to
        ``voicecheck.__version__``. A new object on every call.
    """
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    document["info"]["version"] = __version__
    return document


@bp.record_once
def _load_once(state: BlueprintSetupState) -> None:
    state.app.extensions[EXTENSION_KEY] = {"document": load_document(), "html": None}


def _loaded() -> dict[str, Any]:
    return current_app.extensions[EXTENSION_KEY]


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3.1 document as JSON."""
    return jsonify(_loaded()["document"])


@bp.get("/docs")
def docs_page() -> Response:
    """The OpenAPI document as a readable, self-contained HTML page."""
    loaded = _loaded()
    if loaded["html"] is None:
        loaded["html"] = render_template("docs.html", page=build_page(loaded["document"]))
    response = Response(loaded["html"], mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


# -- the page model: everything the template shows, resolved and escaped --------------------


def resolve(document: dict[str, Any], node: Any) -> Any:
    """Follow ``$ref`` (to ``#/components/...``) until ``node`` is not a reference.

    Parameters
    ----------
    document : dict
        The OpenAPI document.
    node : object
        A part of it, possibly ``{"$ref": "#/components/<kind>/<name>"}``.

    Returns
    -------
    object
        The referenced part (or ``node`` itself when it is no reference).
    """
    seen: set[str] = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith(_REF_PREFIX) or ref in seen:
            raise ValueError(f"cannot resolve {ref!r}; expected a '#/components/...' reference")
        seen.add(ref)
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def text(source: str | None) -> Markup:
    """Render the small Markdown subset the document's descriptions use, escaped.

    Blank lines separate paragraphs, lines starting with ``- `` make a list, and
    ```code``` and ``**bold**`` spans are kept. Links are not made: every URL stays text.

    Parameters
    ----------
    source : str or None
        A description from the document.

    Returns
    -------
    markupsafe.Markup
        Safe HTML.
    """
    if not source:
        return Markup("")
    blocks: list[Markup] = []
    for block in re.split(r"\n\s*\n", source.strip()):
        lines = block.splitlines()
        if lines and lines[0].lstrip().startswith("- "):
            items: list[str] = []
            for line in lines:
                stripped = line.strip()
                if stripped.startswith("- "):
                    items.append(stripped[2:])
                elif items:
                    items[-1] += " " + stripped
            blocks.append(
                Markup("<ul>{}</ul>").format(
                    Markup("").join(Markup("<li>{}</li>").format(_inline(i)) for i in items)
                )
            )
        else:
            joined = " ".join(line.strip() for line in lines)
            blocks.append(Markup("<p>{}</p>").format(_inline(joined)))
    return Markup("\n").join(blocks)


def _inline(source: str) -> Markup:
    html = str(escape(source))
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    html = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", html)
    return Markup(html)  # built from escaped text only


def schema_anchor(name: str) -> str:
    """The page anchor of the component schema ``name``."""
    return "schema-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def type_label(schema: dict[str, Any] | None) -> Markup:
    """A short, linked description of a schema's type, e.g. ``array of Segment``.

    Parameters
    ----------
    schema : dict or None
        A schema object (not resolved: references become links).

    Returns
    -------
    markupsafe.Markup
    """
    if not schema:
        return Markup("any")
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_SCHEMA_PREFIX):
        name = ref[len(_SCHEMA_PREFIX) :]
        return Markup('<a href="#{}">{}</a>').format(schema_anchor(name), name)
    for key, word in (("oneOf", "one of"), ("anyOf", "any of"), ("allOf", "all of")):
        if key in schema:
            parts = Markup(", ").join(type_label(s) for s in schema[key])
            return Markup("{}: {}").format(word, parts)
    if "const" in schema:
        return Markup("<code>{}</code>").format(json.dumps(schema["const"]))
    kind = schema.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    labels = []
    for k in kinds:
        if k == "array":
            labels.append(Markup("array of {}").format(type_label(schema.get("items"))))
        elif k == "string" and schema.get("format"):
            labels.append(Markup("string ({})").format(schema["format"]))
        else:
            labels.append(escape(k))
    label = Markup(" | ").join(labels)
    if "enum" in schema:
        values = Markup(", ").join(
            Markup("<code>{}</code>").format(json.dumps(v)) for v in schema["enum"]
        )
        label = Markup("{}, one of {}").format(label, values)
    return label


_CONSTRAINTS = (
    ("minimum", "at least {}"),
    ("maximum", "at most {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("pattern", "matches {}"),
)


def constraints(schema: dict[str, Any]) -> list[str]:
    """The schema's limits in words (``at least 0``, ``matches ^...$``)."""
    words = [w.format(schema[key]) for key, w in _CONSTRAINTS if key in schema]
    return ["not empty" if w == "at least 1 characters" else w for w in words]


def property_rows(
    document: dict[str, Any], schema: dict[str, Any], prefix: str = ""
) -> list[dict[str, Any]]:
    """One table row per property, inline objects flattened (``progress.total``).

    Parameters
    ----------
    document : dict
        The OpenAPI document.
    schema : dict
        An object schema (references are not followed, except through ``allOf`` members
        that are inline).
    prefix : str
        Prepended to each property name.

    Returns
    -------
    list of dict
        ``name``, ``required``, ``type`` (Markup), ``description`` (Markup) and
        ``constraints`` (list of str) per row.
    """
    rows: list[dict[str, Any]] = []
    for member in schema.get("allOf", []):
        if "$ref" not in member:
            rows.extend(property_rows(document, member, prefix))
    required = set(schema.get("required", []))
    for name, prop in (schema.get("properties") or {}).items():
        rows.append(
            {
                "name": prefix + name,
                "required": name in required,
                "type": type_label(prop),
                "description": text(prop.get("description")),
                "constraints": constraints(prop),
            }
        )
        if "$ref" not in prop and prop.get("properties"):
            rows.extend(property_rows(document, prop, prefix + name + "."))
    return rows


def _example_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def examples(document: dict[str, Any], media: dict[str, Any]) -> list[dict[str, str]]:
    """The examples of a media type object, as titled, pretty-printed texts."""
    out = []
    if "example" in media:
        out.append({"title": "Example", "text": _example_text(media["example"])})
    for name, example in (media.get("examples") or {}).items():
        example = resolve(document, example)
        out.append(
            {
                "title": example.get("summary") or name,
                "text": _example_text(example.get("value")),
            }
        )
    return out


def _contents(document: dict[str, Any], content: dict[str, Any]) -> list[dict[str, Any]]:
    """Media types grouped by identical schema (when they carry no examples or encoding)."""
    groups: list[dict[str, Any]] = []
    for media_type, media in (content or {}).items():
        schema = media.get("schema")
        entry = {
            "media_types": [media_type],
            "raw_schema": schema,
            "schema": type_label(schema),
            "encoding": {
                field: enc["contentType"]
                for field, enc in (media.get("encoding") or {}).items()
                if enc.get("contentType")
            },
            "examples": examples(document, media),
        }
        entry["plain"] = not entry["encoding"] and not entry["examples"]
        same = next(
            (g for g in groups if entry["plain"] and g["plain"] and g["raw_schema"] == schema),
            None,
        )
        if same is not None:
            same["media_types"].append(media_type)
        else:
            groups.append(entry)
    return groups


def _security(document: dict[str, Any], operation: dict[str, Any]) -> list[dict[str, Any]]:
    requirements = operation.get("security", document.get("security", []))
    return [
        {"scheme": name, "scopes": list(scopes)}
        for requirement in requirements
        for name, scopes in requirement.items()
    ]


def operation_view(
    document: dict[str, Any], method: str, path: str, operation: dict[str, Any]
) -> dict[str, Any]:
    """Everything the page shows of one operation, references resolved.

    Parameters
    ----------
    document : dict
        The OpenAPI document.
    method : str
        Lower-case HTTP method.
    path : str
        The path (or webhook name).
    operation : dict
        The operation object.

    Returns
    -------
    dict
    """
    parameters = []
    for param in operation.get("parameters", []):
        param = resolve(document, param)
        schema = param.get("schema") or {}
        parameters.append(
            {
                "name": param["name"],
                "in": param["in"],
                "required": bool(param.get("required")),
                "type": type_label(schema),
                "constraints": constraints(schema),
                "description": text(param.get("description")),
            }
        )
    body = None
    if "requestBody" in operation:
        request_body = resolve(document, operation["requestBody"])
        body = {
            "required": bool(request_body.get("required")),
            "description": text(request_body.get("description")),
            "contents": _contents(document, request_body.get("content", {})),
        }
    responses = []
    for status, response in operation.get("responses", {}).items():
        response = resolve(document, response)
        headers = []
        for name, header in (response.get("headers") or {}).items():
            header = resolve(document, header)
            schema = header.get("schema") or {}
            headers.append(
                {
                    "name": name,
                    "required": bool(header.get("required")),
                    "type": type_label(schema),
                    "constraints": constraints(schema),
                    "description": text(header.get("description")),
                }
            )
        links = [
            {
                "name": name,
                "operation": link.get("operationId", ""),
                "anchor": "op-" + re.sub(r"[^A-Za-z0-9_-]", "-", link.get("operationId", "")),
                "parameters": [
                    f"{param} = {value}" for param, value in (link.get("parameters") or {}).items()
                ],
                "description": text(link.get("description")),
            }
            for name, link in (response.get("links") or {}).items()
        ]
        responses.append(
            {
                "status": str(status),
                "kind": str(status)[:1],
                "description": text(response.get("description")),
                "headers": headers,
                "contents": _contents(document, response.get("content", {})),
                "links": links,
            }
        )
    anchor = operation.get("operationId") or f"{method}-{path}"
    return {
        "anchor": "op-" + re.sub(r"[^A-Za-z0-9_-]", "-", anchor),
        "method": method.upper(),
        "path": path,
        "summary": operation.get("summary", ""),
        "description": text(operation.get("description")),
        "security": _security(document, operation),
        "parameters": parameters,
        "body": body,
        "responses": responses,
    }


def build_page(document: dict[str, Any]) -> dict[str, Any]:
    """The docs page's model: the document resolved into what the template shows.

    Parameters
    ----------
    document : dict
        The OpenAPI document.

    Returns
    -------
    dict
        ``info``, ``servers``, ``groups`` (operations by tag, in document order),
        ``webhooks``, ``security_schemes``, ``error_responses`` and ``schemas``.
    """
    info = document.get("info", {})
    tags = {t["name"]: t for t in document.get("tags", [])}
    groups: dict[str, dict[str, Any]] = {
        name: {"name": name, "description": text(tag.get("description")), "operations": []}
        for name, tag in tags.items()
    }
    for path, item in document.get("paths", {}).items():
        for method in HTTP_METHODS:
            if method not in item:
                continue
            operation = item[method]
            tag = (operation.get("tags") or ["other"])[0]
            group = groups.setdefault(
                tag, {"name": tag, "description": Markup(""), "operations": []}
            )
            group["operations"].append(operation_view(document, method, path, operation))
    webhooks = [
        operation_view(document, method, name, item[method])
        for name, item in (document.get("webhooks") or {}).items()
        for method in HTTP_METHODS
        if method in item
    ]
    components = document.get("components", {})
    schemes = [
        {
            "name": name,
            "type": scheme.get("type"),
            "scheme": scheme.get("scheme"),
            "format": scheme.get("bearerFormat"),
            "description": text(scheme.get("description")),
        }
        for name, scheme in components.get("securitySchemes", {}).items()
    ]
    error_responses = []
    for name, response in components.get("responses", {}).items():
        statuses = sorted(
            {
                str(status)
                for item in document.get("paths", {}).values()
                for method in HTTP_METHODS
                for status, r in item.get(method, {}).get("responses", {}).items()
                if r.get("$ref") == f"#/components/responses/{name}"
            }
        )
        error_responses.append(
            {"name": name, "statuses": statuses, "description": text(response.get("description"))}
        )
    schemas = []
    for name, schema in components.get("schemas", {}).items():
        composition = None
        for key, word in (("oneOf", "one of"), ("anyOf", "any of"), ("allOf", "all of")):
            if key in schema:
                composition = Markup("{}: {}").format(
                    word, Markup(", ").join(type_label(s) for s in schema[key])
                )
        schemas.append(
            {
                "name": name,
                "anchor": schema_anchor(name),
                "description": text(schema.get("description")),
                "type": None if composition else type_label(schema),
                "composition": composition,
                "constraints": constraints(schema),
                "rows": property_rows(document, schema),
            }
        )
    return {
        "title": info.get("title", "API"),
        "version": info.get("version", ""),
        "summary": info.get("summary", ""),
        "description": text(info.get("description")),
        "openapi": document.get("openapi", ""),
        "servers": [
            {"url": s.get("url", ""), "description": s.get("description", "")}
            for s in document.get("servers", [])
        ],
        "groups": [g for g in groups.values() if g["operations"]],
        "webhooks": webhooks,
        "security_schemes": schemes,
        "error_responses": error_responses,
        "schemas": schemas,
    }
