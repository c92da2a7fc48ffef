import json
from collections import Counter

from jsonschema import Draft202012Validator

from forge.gym import handlers as H
from forge.gym.catalogue import BY_NAME, OPENAI_FILE, TOOLS, generated_files, openai_tools
from forge.gym.trajectory import SCHEMA_FILE, render_schema


def test_42_tools_with_at_least_12_configure():
    assert len(TOOLS) == 42 == len(BY_NAME)
    counts = Counter(t.effect for t in TOOLS)
    assert counts["configure"] >= 12
    assert set(counts) == {"observe", "compute", "configure"}


def test_every_tool_has_exactly_one_implementation_of_its_effect_class():
    impl = set(H.READ) | set(H.CONFIGURE) | {"rollback"}
    assert impl == set(BY_NAME)
    for t in TOOLS:
        if t.effect == "configure":
            assert t.name in H.CONFIGURE or t.name == "rollback", t.name
        else:
            assert t.name in H.READ, t.name


def test_schemas_are_valid_json_schemas_with_closed_objects():
    for t in TOOLS:
        Draft202012Validator.check_schema(t.args)
        Draft202012Validator.check_schema(t.result)
        assert t.args["type"] == "object" and t.args["additionalProperties"] is False, t.name
        assert t.description and len(t.description) < 400


def test_schema_files_match_the_catalogue():
    for path, text in generated_files().items():
        assert path.exists(), f"{path} missing: python -m forge.gym.catalogue --write"
        assert path.read_text() == text, f"{path} stale: python -m forge.gym.catalogue --write"
    on_disk = json.loads(OPENAI_FILE.read_text())
    assert [f["function"]["name"] for f in on_disk] == [t.name for t in TOOLS]
    assert on_disk == openai_tools()


def test_trajectory_schema_file_matches_the_models():
    assert SCHEMA_FILE.read_text() == render_schema(), \
        "stale: python -m forge.gym.trajectory --write"
