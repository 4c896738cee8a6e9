"""The dictionary pair of one MLP (``LayerPair``) and its files: a run saves each pair under
``<out_dir>/dicts/<lam_key>/L<layer>/{in,out}``, :func:`load_pairs` reads a set back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from challenge import hooks
from challenge.errors import ConfigError
from challenge.interactions.dictionaries import load_dictionary, save_dictionary
from challenge.interactions.jacobian import MLPWeights
from challenge.sae import SAE


@dataclass
class LayerPair:
    """The input and output dictionaries of one MLP, with the MLP and its scalars."""

    layer: int
    sae_in: SAE
    sae_out: SAE
    mlp: MLPWeights

    def save(self, path: Path, extra: dict) -> None:
        meta = {"layer": self.layer, "s_x": self.mlp.s_x, "s_y": self.mlp.s_y, **extra}
        save_dictionary(self.sae_in, path / "in", hooks.ln2_normalized(self.layer), meta)
        save_dictionary(self.sae_out, path / "out", hooks.mlp_out(self.layer), meta)


def lam_key(lam: float) -> str:
    """The name of one lambda's dictionary set and result entry: ``lam<value>``."""
    return f"lam{lam:g}"


def load_pairs(
    run_dir: str | Path, model, lam_key: str, model_name: str | None = None
) -> dict[int, LayerPair]:
    """Reload the dictionaries a run saved under ``run_dir/dicts/<lam_key>/L<layer>``
    (``model_name``: refuse dictionaries trained on another model)."""
    base = Path(run_dir) / "dicts" / lam_key
    if not base.exists():
        raise ConfigError("no saved dictionaries", file=str(base))
    pairs = {}
    for d in sorted(base.glob("L*"), key=lambda p: int(p.name[1:])):
        sae_in, meta = load_dictionary(d / "in")
        sae_out, _ = load_dictionary(d / "out")
        if model_name is not None and meta.get("model", model_name) != model_name:
            raise ConfigError(
                f"dictionaries of model {meta['model']!r}, not {model_name!r}",
                file=str(d / "in" / "cfg.json"),
                field="model",
            )
        L = int(meta["layer"])
        pairs[L] = LayerPair(
            L, sae_in, sae_out, MLPWeights.from_model(model, L, meta["s_x"], meta["s_y"])
        )
    return pairs
