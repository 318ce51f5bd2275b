"""JSON Schema of every contract model, written to ``schemas/json`` so other languages can use it.

A unit test fails when the models and the files drift apart; ``feedbackloop schemas export``
rewrites the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import schemas

#: Where the exported files live (shipped with the package).
JSON_DIR = Path(__file__).parent / "json"


def contract_models() -> dict[str, type[BaseModel]]:
    """Every pydantic model the ``schemas`` package exports, by name."""
    found = {}
    for name in schemas.__all__:
        value = getattr(schemas, name)
        if isinstance(value, type) and issubclass(value, BaseModel):
            found[name] = value
    return dict(sorted(found.items()))


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema (serialization mode: what is on the wire) of each contract model."""
    return {name: model.model_json_schema(mode="serialization") for name, model in contract_models().items()}


def render(schema: dict[str, Any]) -> str:
    """The exact text a schema file holds."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_json_schemas(directory: Path = JSON_DIR) -> list[Path]:
    """Write one ``<Model>.json`` per contract model; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.json"
        path.write_text(render(schema))
        written.append(path)
    return written
