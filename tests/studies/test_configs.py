"""Study configs refuse bad values at construction, naming the field."""

import pytest

from challenge.errors import ConfigError
from challenge.studies.boundaries import BoundariesConfig
from challenge.studies.feature_finding import FeatureFindingConfig
from challenge.studies.layers import LayersConfig
from challenge.studies.output_states import OutputStatesConfig
from challenge.studies.sae_plateaus import SAEPlateausConfig
from challenge.studies.steering import SteeringConfig

BAD = [
    (OutputStatesConfig, {"families": ("no_such_family",)}, "families"),
    (OutputStatesConfig, {"families": ()}, "families"),
    (OutputStatesConfig, {"k_min": 1}, "k_min"),
    (OutputStatesConfig, {"k_min": 5, "k_max": 4}, "k_max"),
    (OutputStatesConfig, {"n_steps": 1}, "n_steps"),
    (OutputStatesConfig, {"jump_js": -1.0}, "jump_js"),
    (LayersConfig, {"layers": (0, -1)}, "layers"),
    (LayersConfig, {"layer_stride": 0}, "layer_stride"),
    (LayersConfig, {"n_pairs": 0}, "n_pairs"),
    (LayersConfig, {"n_stats": 1}, "n_stats"),
    (LayersConfig, {"steep_factor": 0.0}, "steep_factor"),
    (SteeringConfig, {"contrasts": ("person_adjective:sentiment",)}, "contrasts"),
    (SteeringConfig, {"contrasts": ("nope:a:b:c",)}, "contrasts"),
    (SteeringConfig, {"coef_max": 0.0}, "coef_max"),
    (SteeringConfig, {"n_bases": 1}, "n_bases"),
    (BoundariesConfig, {"n_steps": 2}, "n_steps"),
    (BoundariesConfig, {"window": -1}, "window"),
    (BoundariesConfig, {"max_rows": 0}, "max_rows"),
    (SAEPlateausConfig, {"n_dirs": 0}, "n_dirs"),
    (SAEPlateausConfig, {"ray_steps": 1}, "ray_steps"),
    (SAEPlateausConfig, {"edge_kl": 0.0}, "edge_kl"),
    (FeatureFindingConfig, {"units": "meters"}, "units"),
    (FeatureFindingConfig, {"metrics": ("l2", "hessian")}, "metrics"),
    (FeatureFindingConfig, {"objectives": ("js",)}, "objectives"),
    (FeatureFindingConfig, {"k": 0}, "k"),
    (FeatureFindingConfig, {"opt_radius": -0.1}, "opt_radius"),
    (FeatureFindingConfig, {"seed": -1}, "seed"),
]


@pytest.mark.parametrize("cls,kwargs,field", BAD, ids=lambda v: getattr(v, "__name__", str(v)))
def test_bad_value_is_refused_with_its_field(cls, kwargs, field):
    with pytest.raises(ConfigError) as e:
        cls(**kwargs)
    assert e.value.field == field
    assert f"field {field}" in str(e.value)


@pytest.mark.parametrize(
    "cls",
    [
        OutputStatesConfig,
        LayersConfig,
        SteeringConfig,
        BoundariesConfig,
        SAEPlateausConfig,
        FeatureFindingConfig,
    ],
)
def test_defaults_are_valid(cls):
    cls()
