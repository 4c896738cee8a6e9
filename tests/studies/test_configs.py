"""Study configs refuse bad values at construction, naming the field."""

from dataclasses import fields

import pytest

from challenge.atlas import AtlasConfig
from challenge.errors import ConfigError
from challenge.studies.boundaries import BoundariesConfig
from challenge.studies.feature_finding import FeatureFindingConfig
from challenge.studies.layers import LayersConfig
from challenge.studies.output_states import OutputStatesConfig
from challenge.studies.sae_collapse import SAECollapseConfig
from challenge.studies.sae_plateaus import SAEPlateausConfig
from challenge.studies.steering import SteeringConfig

CONFIGS = [
    OutputStatesConfig,
    LayersConfig,
    SteeringConfig,
    BoundariesConfig,
    SAEPlateausConfig,
    SAECollapseConfig,
    FeatureFindingConfig,
    AtlasConfig,
]

BAD = [
    (OutputStatesConfig, {"families": ("no_such_family",)}, "families"),
    (OutputStatesConfig, {"families": ()}, "families"),
    (OutputStatesConfig, {"k_min": 1}, "k_min"),
    (OutputStatesConfig, {"k_min": 5, "k_max": 4}, "k_max"),
    (OutputStatesConfig, {"n_steps": 1}, "n_steps"),
    (OutputStatesConfig, {"jump_js": -1.0}, "jump_js"),
    (OutputStatesConfig, {"n_pairs": 2.5}, "n_pairs"),
    (OutputStatesConfig, {"families": "city_weather"}, "families"),
    (LayersConfig, {"layers": (0, -1)}, "layers"),
    (LayersConfig, {"layer_stride": 0}, "layer_stride"),
    (LayersConfig, {"n_pairs": 0}, "n_pairs"),
    (LayersConfig, {"n_stats": 1}, "n_stats"),
    (LayersConfig, {"steep_factor": 0.0}, "steep_factor"),
    (LayersConfig, {"control": False, "n_stats": 1, "seed": -1}, "seed"),
    (SteeringConfig, {"contrasts": ("person_adjective:sentiment",)}, "contrasts"),
    (SteeringConfig, {"contrasts": ("nope:a:b:c",)}, "contrasts"),
    (SteeringConfig, {"coef_max": 0.0}, "coef_max"),
    (SteeringConfig, {"n_bases": 1}, "n_bases"),
    (SteeringConfig, {"contrasts": ()}, "contrasts"),
    (BoundariesConfig, {"n_steps": 2}, "n_steps"),
    (BoundariesConfig, {"window": -1}, "window"),
    (BoundariesConfig, {"max_rows": 0}, "max_rows"),
    (SAEPlateausConfig, {"n_dirs": 0}, "n_dirs"),
    (SAEPlateausConfig, {"ray_steps": 1}, "ray_steps"),
    (SAEPlateausConfig, {"edge_kl": 0.0}, "edge_kl"),
    (SAEPlateausConfig, {"n_p3": -1}, "n_p3"),
    (SAECollapseConfig, {"n_near": 0, "n_far": 0}, "n_near"),
    (SAECollapseConfig, {"n_far": -1}, "n_far"),
    (SAECollapseConfig, {"path_steps": 2}, "path_steps"),
    (SAECollapseConfig, {"n_boot": 0}, "n_boot"),
    (FeatureFindingConfig, {"units": "meters"}, "units"),
    (FeatureFindingConfig, {"metrics": ("l2", "hessian")}, "metrics"),
    (FeatureFindingConfig, {"objectives": ("js",)}, "objectives"),
    (FeatureFindingConfig, {"k": 0}, "k"),
    (FeatureFindingConfig, {"opt_radius": -0.1}, "opt_radius"),
    (FeatureFindingConfig, {"seed": -1}, "seed"),
    (FeatureFindingConfig, {"use_sae": "yes"}, "use_sae"),
    (AtlasConfig, {"layers": (1, -2)}, "layers"),
    (AtlasConfig, {"n_points": 2}, "n_points"),
    (AtlasConfig, {"p1_steps": 10}, "p1_steps"),
    (AtlasConfig, {"n_boot": 5}, "n_boot"),
]


@pytest.mark.parametrize("cls,kwargs,field", BAD, ids=lambda v: getattr(v, "__name__", str(v)))
def test_bad_value_is_refused_with_its_field(cls, kwargs, field):
    with pytest.raises(ConfigError) as e:
        cls(**kwargs)
    assert e.value.field == field
    assert f"field {field}" in str(e.value)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_defaults_are_valid(cls):
    cls()


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_configs_hold_what_is_measured_not_where(cls):
    """The track, the output folder and plotting are the run's arguments (the CLI adds them)."""
    assert not {f.name for f in fields(cls)} & {"track", "out", "plot"}
