"""SAELens' on-disk layout (read and write) and its pretrained releases on the hub.

On disk (SAELens' layout and key names, so SAELens can read ours and we read SAELens')::

    <dir>/cfg.json                 d_in, d_sae, architecture, activation_fn_str, activation_fn_kwargs,
                                   apply_b_dec_to_input, normalize_activations, hook_name, ...
                                   (+ "plateau": our SAEConfig, training stats, track)
    <dir>/sae_weights.safetensors  W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
    <dir>/sparsity.safetensors     "sparsity": log10(firing frequency + 1e-10) per latent [d_sae]

Pretrained SAEs on the hub: ``load_sae("saelens:<release>/<sae_id>")`` downloads SAELens'
release files (``<path>/cfg.json``, ``sae_weights.safetensors``, ``sparsity.safetensors``)
with ``huggingface_hub.hf_hub_download``; ``PRETRAINED`` lists the releases we know
(``gpt2-small-res-jb``, the SAE of the P1 paper). Offline this raises a ``ConfigError`` saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from challenge import hooks
from challenge.errors import ConfigError
from challenge.sae.model import SAE

CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE = (
    "cfg.json",
    "sae_weights.safetensors",
    "sparsity.safetensors",
)

# Known SAELens releases: release -> (hub repo, {sae_id: path inside the repo}).
PRETRAINED: dict[str, tuple[str, dict[str, str]]] = {
    "gpt2-small-res-jb": (
        "jbloom/GPT2-Small-SAEs-Reformatted",
        {hooks.resid_pre(i): hooks.resid_pre(i) for i in range(12)}
        | {hooks.resid_post(11): hooks.resid_post(11)},
    ),
}


def saelens_cfg(sae: SAE, extra: dict[str, Any]) -> dict[str, Any]:
    """SAELens' ``cfg.json`` fields of ``sae``, updated with ``extra``."""
    arch = {"topk": "topk", "relu": "standard", "jumprelu": "jumprelu"}[sae.kind]
    cfg = {
        "architecture": arch,
        "d_in": sae.d_in,
        "d_sae": sae.n_latents,
        "dtype": "float32",
        "device": "cpu",
        "activation_fn_str": "topk" if sae.kind == "topk" else "relu",
        "activation_fn_kwargs": {"k": sae.k} if sae.kind == "topk" else {},
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "finetuning_scaling_factor": False,
        "prepend_bos": True,
    }
    return cfg | extra


def save_sae(sae: SAE, out_dir: str | Path, extra_cfg: dict[str, Any] | None = None) -> Path:
    """Write ``cfg.json``, ``sae_weights.safetensors``, ``sparsity.safetensors`` atomically."""
    from safetensors.torch import save_file

    from challenge.results import atomic_dir

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        weights = {
            k: getattr(sae, k).detach().float().contiguous()
            for k in ("W_enc", "b_enc", "W_dec", "b_dec")
        }
        if sae.kind == "jumprelu":
            weights["threshold"] = sae.threshold.detach().float().contiguous()
        save_file(weights, str(tmp / WEIGHTS_FILE))
        save_file({"sparsity": sae.log_sparsity.float().contiguous()}, str(tmp / SPARSITY_FILE))
        cfg = saelens_cfg(sae, dict(extra_cfg or {}))
        if sae.meta:
            cfg["plateau"] = sae.meta.get("plateau", sae.meta)
        (tmp / CFG_FILE).write_text(json.dumps(cfg, indent=1))
    return out_dir


def kind_from_cfg(cfg: dict[str, Any], file: str) -> tuple[str, int]:
    """(kind, k) of a SAELens ``cfg.json`` (k = 0 unless topk); ``ConfigError`` if unsupported."""
    arch = cfg.get("architecture", "standard")
    fn = cfg.get("activation_fn_str", "relu")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if arch == "topk" or fn == "topk":
        if "k" not in kwargs and "k" not in cfg:
            raise ConfigError("topk SAE without activation_fn_kwargs.k", file=file, field="k")
        return "topk", int(kwargs.get("k", cfg.get("k")))
    if arch == "jumprelu":
        return "jumprelu", 0
    if arch in ("standard", "relu") and fn == "relu":
        return "relu", 0
    raise ConfigError(
        f"unsupported SAE architecture {arch!r} / activation {fn!r}",
        file=file,
        field="architecture",
    )


def load_dir(path: Path, latent_major: bool = False) -> SAE:
    """An SAE from a SAELens-layout directory (ours or SAELens'); ``latent_major``: see
    :class:`~challenge.sae.model.SAE`."""
    from safetensors.torch import load_file

    cfg_path, w_path = path / CFG_FILE, path / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.exists():
            raise ConfigError("missing (not an SAE directory)", file=str(p))
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON ({e.msg})", file=str(cfg_path)) from e
    for key in ("d_in", "d_sae"):
        if key not in cfg:
            raise ConfigError("missing", file=str(cfg_path), field=key)
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, False, "none"):
        raise ConfigError(
            f"normalize_activations={norm!r} is not supported (activations must be raw)",
            file=str(cfg_path),
            field="normalize_activations",
        )
    kind, k = kind_from_cfg(cfg, str(cfg_path))
    w = load_file(str(w_path))
    need = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"threshold"} if kind == "jumprelu" else set())
    missing = need - set(w)
    if missing:
        raise ConfigError(f"missing tensors {sorted(missing)}", file=str(w_path))
    d, n = int(cfg["d_in"]), int(cfg["d_sae"])
    if tuple(w["W_enc"].shape) != (d, n) or tuple(w["W_dec"].shape) != (n, d):
        raise ConfigError(
            f"W_enc {tuple(w['W_enc'].shape)} / W_dec {tuple(w['W_dec'].shape)} do not match d_in={d}, d_sae={n}",
            file=str(w_path),
        )
    scale = w.get("scaling_factor", w.get("finetuning_scaling_factor"))
    if scale is not None and not torch.allclose(scale.float(), torch.ones_like(scale.float())):
        raise ConfigError("finetuning scaling factors are not supported", file=str(w_path))
    sae = SAE(
        d,
        n,
        kind,
        k or 32,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        meta={"cfg": cfg, "source": str(path)}
        | ({"plateau": cfg["plateau"]} if "plateau" in cfg else {}),
        latent_major=latent_major,
    )
    with torch.no_grad():
        for name in need:
            getattr(sae, name).copy_(w[name].float())
        sp = path / SPARSITY_FILE
        if sp.exists():
            s = load_file(str(sp))
            key = "sparsity" if "sparsity" in s else next(iter(s))
            sae.log_sparsity.copy_(s[key].float().reshape(n))
        else:
            sae.meta["no_sparsity"] = True
            sae.log_sparsity.fill_(0.0)  # unknown: treat every latent as alive
    return sae.eval()


def hub_files(release: str, sae_id: str) -> tuple[str, list[str]]:
    """(repo_id, files) of a SAELens release's SAE on the hub."""
    if release not in PRETRAINED:
        raise ConfigError(
            f"unknown SAE release {release!r}; known: {sorted(PRETRAINED)}", field="release"
        )
    repo, ids = PRETRAINED[release]
    if sae_id not in ids:
        raise ConfigError(f"{release} has no SAE {sae_id!r}; known: {sorted(ids)}", field="sae_id")
    folder = ids[sae_id]
    return repo, [f"{folder}/{CFG_FILE}", f"{folder}/{WEIGHTS_FILE}", f"{folder}/{SPARSITY_FILE}"]


def download_pretrained(release: str, sae_id: str) -> Path:
    """Fetch a SAELens release's files with ``hf_hub_download``; return their local directory."""
    from huggingface_hub import hf_hub_download

    repo, files = hub_files(release, sae_id)
    paths = []
    for i, fname in enumerate(files):
        try:
            paths.append(Path(hf_hub_download(repo_id=repo, filename=fname)))
        except Exception as e:  # offline, missing file, network error
            if i == 2 and "EntryNotFound" in type(e).__name__:
                continue  # the sparsity file is optional
            raise ConfigError(
                f"could not download {repo}/{fname} ({type(e).__name__}: {str(e)[:120]}); "
                "the hub is unreachable or HF_HUB_OFFLINE=1. Pass a local SAELens directory instead.",
                field="sae",
            ) from e
    return paths[0].parent


def load_sae(source: str | Path, latent_major: bool = False) -> SAE:
    """An SAE from a directory (ours or SAELens') or ``saelens:<release>/<sae_id>`` (the hub)."""
    s = str(source)
    if s.startswith("saelens:"):
        release, _, sae_id = s[len("saelens:") :].partition("/")
        sae = load_dir(download_pretrained(release, sae_id), latent_major)
        sae.meta["release"], sae.meta["sae_id"] = release, sae_id
        return sae
    path = Path(source)
    if not path.is_dir():
        raise ConfigError("SAE directory does not exist", file=str(path))
    return load_dir(path, latent_major)
