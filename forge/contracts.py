"""JSON Schemas in schemas/ are generated from forge's pydantic models: one source of truth.

`python -m forge schemas` rewrites them; tests/test_contracts.py fails when a model changed and
the files were not regenerated (or someone edited a file by hand).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from forge.scenario import Scenario

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"

# file name -> pydantic model
MODELS: dict[str, type[BaseModel]] = {
    "scenario.schema.json": Scenario,
}


def generated_schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for name, model in MODELS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = name
        out[name] = schema
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(schema_dir: Path = SCHEMA_DIR) -> list[Path]:
    schema_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in generated_schemas().items():
        p = schema_dir / name
        p.write_text(render(schema))
        paths.append(p)
    return paths
