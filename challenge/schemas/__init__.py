"""JSON schemas of the result files, generated from the result classes.

:data:`RESULT_CLASSES` is the one registry: schema name -> ``"module:Class"`` of a result
dataclass (a :class:`challenge.results.Result` subclass, or the score report). Classes are
imported only when a schema is generated, so any module may add its result classes here.
``challenge/schemas/<name>.schema.json`` holds the committed schema of each; regenerate them
with ``python scripts/generate_schemas.py`` (a test checks that they are up to date).

Every dataclass written to a result's JSON sets ``__pydantic_config__ = JSON_CONFIG``, so that
every field the JSON always carries is required by the schema, defaults or not, and each
field's docstring is its description.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).parent
DRAFT = "https://json-schema.org/draft/2020-12/schema"
JSON_CONFIG = {
    "json_schema_serialization_defaults_required": False,
    "use_attribute_docstrings": True,
}
"""pydantic config of a class written to JSON: a field's docstring is its description. Fields
with defaults are not required by the schema (with that option on, pydantic also made the
optional keys of a ``total=False`` TypedDict required, e.g. ``submission.access``, which only
the organiser's tools add)."""
NOT_SERIALISED = ("arrays", "path")
"""Fields of a result that never go to its JSON (the ``.npz`` arrays, where it was written)."""

RESULT_CLASSES: dict[str, str] = {
    "score_report": "challenge.scoring.report:ScoreReport",
    "p1_result": "challenge.protocols:P1Result",
    "p2_result": "challenge.protocols:P2Result",
    "p3_result": "challenge.protocols:P3Result",
    "output_states_result": "challenge.studies.output_states:OutputStatesResult",
    "layers_result": "challenge.studies.layers:LayersResult",
    "steering_result": "challenge.studies.steering:SteeringResult",
    "boundaries_result": "challenge.studies.boundaries:BoundariesResult",
    "sae_plateaus_result": "challenge.studies.sae_plateaus:SAEPlateausResult",
    "sae_collapse_result": "challenge.studies.sae_collapse:SAECollapseResult",
    "feature_finding_result": "challenge.studies.feature_finding:FeatureFindingResult",
    "error_correction_result": "challenge.studies.error_correction:ErrorCorrectionResult",
    "training_result": "challenge.studies.training.study:TrainingResult",
    "interactions_result": "challenge.interactions.results:InteractionsResult",
    "interactions_circuit_result": "challenge.interactions.circuit:CircuitResult",
    "track_sae_result": "challenge.pipeline:TrackSAEResult",
    "track_e2e_sae_result": "challenge.sae.e2e_track:TrackE2EResult",
    "main_result": "challenge.pipeline:MainResult",
    "atlas_result": "challenge.atlas:AtlasResult",
}
"""Schema name (``<kind>_result``) -> ``"module:Class"``; add a result class here to get its
schema."""


def schema_name(doc: dict[str, Any]) -> str | None:
    """The registered schema a written result document follows (``<kind>_result``; the score
    report by its ``schema`` field), or None when none is registered for it."""
    if doc.get("schema") == "plateau-score/1":
        return "score_report"
    name = f"{doc.get('kind')}_result"
    return name if name in RESULT_CLASSES else None


def result_class(name: str) -> type:
    """The class registered under ``name`` in :data:`RESULT_CLASSES` (imported now)."""
    module, _, cls = RESULT_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def schema_of(cls: type, title: str | None = None) -> dict[str, Any]:
    """The JSON schema of what ``cls.to_json()`` writes: pydantic's serialisation schema of the
    dataclass without the fields in :data:`NOT_SERIALISED`."""
    from challenge.results import json_schema

    s = json_schema(cls)
    for f in NOT_SERIALISED:
        s.get("properties", {}).pop(f, None)
        if f in s.get("required", []):
            s["required"].remove(f)
    return {"$schema": DRAFT, "title": title or s.get("title", cls.__name__), **s}


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def generate_schemas() -> dict[str, dict[str, Any]]:
    """Every registered schema, by name."""
    return {name: schema_of(result_class(name)) for name in RESULT_CLASSES}


def schema_text(schema: dict[str, Any]) -> str:
    """How a schema file is written (stable key order, trailing newline)."""
    return json.dumps(schema, indent=2) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write ``<directory>/<name>.schema.json`` for every registered class; return the paths."""
    paths = []
    for name, schema in generate_schemas().items():
        p = Path(directory) / f"{name}.schema.json"
        p.write_text(schema_text(schema))
        paths.append(p)
    return paths


def load_schema(name: str) -> dict[str, Any]:
    """The committed schema ``name`` (see :data:`RESULT_CLASSES`)."""
    return json.loads(schema_path(name).read_text())


def validate(doc: dict[str, Any], name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``doc`` matches the committed schema ``name``."""
    import jsonschema

    jsonschema.validate(doc, load_schema(name))
