import json

import jsonschema

from forge.contracts import SCHEMA_DIR, generated_schemas, render
from forge.ns3.grid import sample_grid


def test_schema_files_match_the_models():
    for name, schema in generated_schemas().items():
        path = SCHEMA_DIR / name
        assert path.exists(), f"{name} missing: run `python -m forge schemas`"
        assert path.read_text() == render(schema), f"{name} is stale: run `python -m forge schemas`"


def test_sampled_scenarios_validate_against_the_json_schema():
    schema = json.loads((SCHEMA_DIR / "scenario.schema.json").read_text())
    for s in sample_grid(10):
        jsonschema.validate(json.loads(s.model_dump_json()), schema)
