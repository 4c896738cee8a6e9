"""The committed result schemas are the ones generated from the result classes."""

import json

import pytest

from challenge.schemas import (
    RESULT_CLASSES,
    generate_schemas,
    result_class,
    schema_path,
    schema_text,
)


def test_committed_schemas_are_up_to_date():
    """Run ``python scripts/generate_schemas.py`` when this fails after a class change."""
    for name, schema in generate_schemas().items():
        path = schema_path(name)
        assert path.exists(), f"{path} missing"
        assert path.read_text() == schema_text(schema), f"{path} is stale"


@pytest.mark.parametrize("name", sorted(RESULT_CLASSES))
def test_schemas_describe_only_what_the_json_carries(name):
    schema = json.loads(schema_path(name).read_text())
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "arrays" not in schema["properties"] and "path" not in schema["properties"]
    assert set(schema["required"]) <= set(schema["properties"])
    assert hasattr(result_class(name), "to_json")
