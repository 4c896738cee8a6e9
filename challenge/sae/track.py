"""The SAE of a track (published or trained and cached), its training data, and P3's SAE
direction sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from challenge import hooks
from challenge.errors import ConfigError
from challenge.sae.io import WEIGHTS_FILE, load_sae, save_sae
from challenge.sae.model import SAE, SAEConfig
from challenge.sae.train import evaluate_sae, train_sae

DIRECTION_KINDS = ("sae_active", "sae_inactive_alive", "sae_dead", "sae_error")
# Tracks whose model has a published SAE at the write point: model name -> release.
TRACK_RELEASES = {"gpt2": "gpt2-small-res-jb", "gpt2-small": "gpt2-small-res-jb"}


def published_sae_dir(track, name: str) -> Path | None:
    """The SAE ``name`` published with the track (``<track>/saes/<name>/``, verified against its
    manifest), or ``None``."""
    from challenge.store import SAE_FOLDER, verify_sae

    root = getattr(track, "sae_root", None) or (
        Path(track.path) / SAE_FOLDER if getattr(track, "path", None) else None
    )
    if root is None:
        return None
    d = Path(root) / name
    if not (d / WEIGHTS_FILE).exists():
        return None
    verify_sae(d)
    return d


def sae_cache_dir(track, name: str) -> Path:
    """Where a track's SAE of this name is trained and cached on this machine."""
    from challenge.models import cache_root

    return cache_root() / "saes" / track.spec.track_id / f"v{track.spec.version}" / name


def track_sae_dir(track, cfg: SAEConfig | None = None) -> Path:
    """The track's SAE with ``cfg``: the one published with the track when there is one (the
    same SAE on every machine), else the local cache (trained here when missing)."""
    name = (cfg or SAEConfig()).name()
    return published_sae_dir(track, name) or sae_cache_dir(track, name)


def board_sae_dirs(track) -> list[Path]:
    """The SAEs the board's generators use (the default local SAE and the default e2e SAE),
    where they exist: what ``plateau publish`` ships with the track."""
    from challenge.sae.e2e import E2EConfig
    from challenge.sae.e2e_track import track_e2e_dir

    dirs = [track_sae_dir(track), track_e2e_dir(track, E2EConfig())]
    return [d for d in dirs if (d / WEIGHTS_FILE).exists()]


def write_hook_name(track, n_layers: int) -> str:
    """The ``blocks.L.hook_resid_pre`` name of the track's write point."""
    start = hooks.parse_resid(track.spec.write_hook, n_layers, "write_hook")
    if start >= n_layers:
        raise ConfigError(
            "write point after the last block leaves nothing to run", field="write_hook"
        )
    return hooks.resid_pre(start)


def track_training_acts(
    track, positions: str = "all", lm=None, batch: int = 256
) -> Float[Tensor, "n d_model"]:
    """SAE training data of a track: the public split ("last") or the write-hook activations at
    every position but the first of the public prompts ("all"; runs the model up to the hook)."""
    if positions == "last":
        return track.acts("public")
    if positions != "all":
        raise ConfigError(
            f"positions must be 'last' or 'all', not {positions!r}", field="positions"
        )
    from challenge.activations import capture
    from challenge.models import load_model

    lm = lm or load_model(track.spec.model)
    hook = write_hook_name(track, lm.cfg.n_layers)
    acts = capture(
        lm.model,
        track.tokens("public"),
        [hook],
        positions="after_first",
        batch_size=batch,
        device="cpu",
    )
    return acts[hook]


def track_sae(
    track,
    cfg: SAEConfig | None = None,
    *,
    lm=None,
    train: bool = True,
    progress: bool = True,
) -> SAE:
    """The track's SAE: the published one for GPT-2 tracks (SAELens ``gpt2-small-res-jb`` at the
    write hook), else ours, trained on the public split when missing and cached in
    ``<cache>/saes/<track_id>/v<version>/<cfg name>/``."""
    release = TRACK_RELEASES.get(track.spec.model.name)
    if release is not None and cfg is None:
        return load_sae(f"saelens:{release}/{track.spec.write_hook}")
    cfg = cfg or SAEConfig()
    d = track_sae_dir(track, cfg)
    if (d / WEIGHTS_FILE).exists():
        return load_sae(d)
    if not train:
        raise ConfigError(
            f"no SAE at {d}; run `plateau train-sae {track.spec.track_id}`", field="sae"
        )
    sae, stats = train_sae(track_training_acts(track, cfg.positions, lm), cfg, progress=progress)
    stats["public_eval"] = evaluate_sae(sae, track.acts("public"))
    stats["heldout_eval"] = evaluate_sae(sae, track.acts("heldout"))
    sae.meta["plateau"]["stats"] = stats
    sae.meta["plateau"]["track"] = {"id": track.spec.track_id, "version": track.spec.version}
    save_sae(sae, d, {"hook_name": track.spec.write_hook, "model_name": track.spec.model.name})
    return load_sae(d)


@torch.no_grad()
def sae_direction_sets(
    sae: SAE, track, n_base: int = 100, seed: int = 0
) -> dict[str, Float[Tensor, "n_base d_model"]]:
    """Unit directions per base activation for P3, for the same context rows ``run_p3`` uses
    (stream ``p3.contexts``): a decoder row of a latent active at x, of an alive latent inactive
    at x, of a dead latent (omitted when the SAE has none), and the SAE error SAE(x) - x. Latents
    are drawn uniformly within each class with ``seed``
    (``challenge.directions.pick_latent_per_class``)."""
    from challenge.directions import classify_latents, pick_latent_per_class, sae_decoder_directions
    from challenge.rng import subset

    ctx = track.acts("context")
    idx = subset(len(ctx), n_base, seed, "p3.contexts")
    x = ctx[idx].float()
    pre = sae.pre_acts(x)
    f = sae.activate(pre)
    classes = classify_latents(f, sae.firing_freq)
    picks = pick_latent_per_class(classes, seed)
    # a row with no active latent (possible for ReLU SAEs): its highest pre-activation latent
    empty = picks["active"] < 0
    if empty.any():
        picks["active"] = torch.where(empty, pre.argmax(1), picks["active"])
    out: dict[str, Tensor] = {
        "sae_active": sae_decoder_directions(sae.W_dec, picks["active"]),
        "sae_inactive_alive": sae_decoder_directions(
            sae.W_dec, picks["inactive_alive"].clamp_min(0)
        ),
    }
    if (picks["dead"] >= 0).all():
        out["sae_dead"] = sae_decoder_directions(sae.W_dec, picks["dead"])
    err = sae.decode(f) - x
    out["sae_error"] = err / err.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return out


def describe(sae: SAE) -> dict[str, Any]:
    """A short JSON-able description (kind, sizes, source, training stats when ours)."""
    d = {"kind": sae.kind, "n_latents": sae.n_latents, "d_in": sae.d_in}
    if sae.kind == "topk":
        d["k"] = sae.k
    for key in ("source", "release", "sae_id"):
        if key in sae.meta:
            d[key] = sae.meta[key]
    p = sae.meta.get("plateau", {})
    if "config" in p:
        d["config"] = p["config"]
    if "stats" in p:
        d["stats"] = {k: v for k, v in p["stats"].items() if k != "history"}
    d["dead_fraction_train"] = float(sae.dead_mask().float().mean())
    return d
