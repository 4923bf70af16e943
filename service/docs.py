"""The OpenAPI document and the docs page."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("docs", __name__)
