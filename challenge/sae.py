"""Sparse autoencoders for the tracks: TopK / ReLU training, SAELens' on-disk format, evaluation,
and the SAE direction sets of P3.

On disk (SAELens' layout and key names, so SAELens can read ours and we read SAELens')::

    <dir>/cfg.json                 d_in, d_sae, architecture, activation_fn_str, activation_fn_kwargs,
                                   apply_b_dec_to_input, normalize_activations, hook_name, ...
                                   (+ "plateau": our SAEConfig, training stats, track)
    <dir>/sae_weights.safetensors  W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
    <dir>/sparsity.safetensors     "sparsity": log10(firing frequency + 1e-10) per latent [d_sae]

Encoding (SAELens' ``standard`` / ``topk`` / ``jumprelu``)::

    pre = (x - b_dec) @ W_enc + b_enc         (x @ W_enc + b_enc when apply_b_dec_to_input is false)
    f   = relu(pre) | relu(topk_k(pre)) | pre * (pre > threshold)
    x_hat = f @ W_dec + b_dec

Dead latents: SAELens stores ``log10(freq + 1e-10)``, so a latent that never fired on the
measurement set sits at the floor -10. ``dead_mask`` counts a latent dead when its stored value
is at that floor (never fired on the training set), which is P1's "log10 frequency below -10"
read on the stored scale. ``evaluate_sae`` reports separately the fraction never firing on the
evaluation set it is given.

Pretrained SAEs on the hub: ``load_sae("saelens:<release>/<sae_id>")`` downloads SAELens'
release files (``<path>/cfg.json``, ``sae_weights.safetensors``, ``sparsity.safetensors``)
with ``huggingface_hub.hf_hub_download``; ``PRETRAINED`` lists the releases we know
(``gpt2-small-res-jb``, the SAE of the P1 paper). Offline this raises a ``ConfigError`` saying so.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from challenge.errors import ConfigError

CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE = (
    "cfg.json",
    "sae_weights.safetensors",
    "sparsity.safetensors",
)
LOG_FLOOR = -10.0  # SAELens: log10(freq + 1e-10); never fired -> -10
DIRECTION_KINDS = ("sae_active", "sae_inactive_alive", "sae_dead", "sae_error")

# Known SAELens releases: release -> (hub repo, {sae_id: path inside the repo}).
PRETRAINED: dict[str, tuple[str, dict[str, str]]] = {
    "gpt2-small-res-jb": (
        "jbloom/GPT2-Small-SAEs-Reformatted",
        {f"blocks.{i}.hook_resid_pre": f"blocks.{i}.hook_resid_pre" for i in range(12)}
        | {"blocks.11.hook_resid_post": "blocks.11.hook_resid_post"},
    ),
}
# Tracks whose model has a published SAE at the write point: model name -> release.
TRACK_RELEASES = {"gpt2": "gpt2-small-res-jb", "gpt2-small": "gpt2-small-res-jb"}


@dataclass
class SAEConfig:
    """How an SAE is trained (and, for loaded SAEs, what it is)."""

    kind: Literal["topk", "relu"] = "topk"
    n_latents: int = 4096
    k: int = 32  # topk: active latents per input
    l1: float = 3e-3  # relu: L1 coefficient on f * ||W_dec row||, in normalised units
    lr: float = 1e-3
    steps: int = 1000
    batch: int = 256
    seed: int = 0
    aux_k: int = 256  # topk: AuxK latents (dead ones) that reconstruct the residual; 0 = off
    aux_coef: float = 1 / 32
    dead_after: int = 50_000  # topk: a latent unfired for this many samples counts as dead for AuxK
    # training data on a track: "last" = the public split (last position only); "all" = every
    # position but the first of the public prompts at the write hook (needs the model; what
    # SAELens-style SAEs are trained on, and 9x the data: less overfitting)
    positions: Literal["last", "all"] = "all"

    def name(self) -> str:
        tag = f"k{self.k}" if self.kind == "topk" else f"l1{self.l1:g}"
        return f"{self.kind}-{self.n_latents}-{tag}-{self.positions}-{self.steps}-s{self.seed}"


class SAE(nn.Module):
    """A (TopK / ReLU / JumpReLU) sparse autoencoder with SAELens' parameter names and shapes."""

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        kind: str = "topk",
        k: int = 32,
        apply_b_dec_to_input: bool = True,
        meta: dict[str, Any] | None = None,
    ):
        super().__init__()
        if kind not in ("topk", "relu", "jumprelu"):
            raise ConfigError(f"unknown SAE kind {kind!r} (topk, relu, jumprelu)", field="kind")
        self.d_in, self.n_latents, self.kind, self.k = d_in, n_latents, kind, k
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.W_enc = nn.Parameter(torch.zeros(d_in, n_latents))
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.W_dec = nn.Parameter(torch.zeros(n_latents, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if kind == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(n_latents))
        # log10(firing frequency + 1e-10) on the training set (SAELens' "sparsity")
        self.register_buffer("log_sparsity", torch.full((n_latents,), LOG_FLOOR))
        self.meta: dict[str, Any] = meta or {}

    # ------------------------------------------------------------------ forward
    def pre_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... n_latents"]:
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: Tensor) -> Tensor:
        if self.kind == "relu":
            return torch.relu(pre)
        if self.kind == "jumprelu":
            return pre * (pre > self.threshold)
        top = pre.topk(min(self.k, pre.shape[-1]), dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... n_latents"]:
        return self.activate(self.pre_acts(x))

    def decode(self, f: Float[Tensor, "... n_latents"]) -> Float[Tensor, "... d_in"]:
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ latent classes
    @property
    def firing_freq(self) -> Float[Tensor, " n_latents"]:
        """Firing frequency on the training set (0 for latents at the SAELens floor)."""
        ls = self.log_sparsity.double()
        return torch.where(ls <= LOG_FLOOR + 1e-3, torch.zeros_like(ls), 10.0**ls).float()

    def dead_mask(self) -> torch.Tensor:
        """Latents that never fired on the training set (stored log10 frequency at the -10 floor)."""
        return self.log_sparsity <= LOG_FLOOR + 1e-3

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))


# ---------------------------------------------------------------------------------- training
def _geometric_median(x: Tensor, iters: int = 50) -> Tensor:
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-6)
        m = (w[:, None] * x).sum(0) / w.sum()
    return m


@torch.no_grad()
def firing_log10(sae: SAE, acts: Tensor, batch: int = 1024) -> Tensor:
    """SAELens' stored sparsity of ``acts``: log10(fraction of rows where a latent fires + 1e-10)."""
    count = torch.zeros(sae.n_latents, dtype=torch.float64)
    for i in range(0, len(acts), batch):
        count += (sae.encode(acts[i : i + batch]) > 0).sum(0).double()
    return torch.log10(count / max(len(acts), 1) + 1e-10).float()


@torch.enable_grad()  # callers (e.g. a generator's fit under no_grad) may have grad disabled
def train_sae(
    acts: Float[Tensor, "n d_in"], cfg: SAEConfig, progress: bool = True
) -> tuple[SAE, dict[str, Any]]:
    """Train an SAE on ``acts`` (float32, CPU is fine: minutes for 4096 latents).

    Trains on activations scaled by one scalar s (RMS distance to the mean / sqrt(d)) and folds
    s back so that the SAE maps raw activations, with unit-norm decoder rows and latent values in
    raw units. TopK: MSE + AuxK (dead latents reconstruct the residual, Gao et al. 2024); ReLU:
    MSE + l1 * sum f ||W_dec||. Decoder rows are renormalised after every step.
    Returns the SAE (its ``log_sparsity`` measured on ``acts``) and training stats."""
    if acts.ndim != 2 or len(acts) < 2:
        raise ConfigError(f"need activations [n >= 2, d], got {tuple(acts.shape)}", field="acts")
    if cfg.kind not in ("topk", "relu"):
        raise ConfigError(f"can train topk or relu, not {cfg.kind!r}", field="kind")
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(cfg.seed)
    x_all = acts.detach().float().cpu()
    n, d = x_all.shape
    mu = x_all.mean(0)
    s = float(((x_all - mu).pow(2).sum(1).mean() / d).sqrt())
    xs = x_all / s
    var_total = float((xs - xs.mean(0)).pow(2).sum(1).mean())
    sae = SAE(d, cfg.n_latents, cfg.kind, cfg.k)
    with torch.no_grad():
        w = torch.randn(cfg.n_latents, d, generator=g)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T * (1.0 if cfg.kind == "topk" else 0.1))
        sae.b_dec.copy_(_geometric_median(xs))
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda i: (
            min(1.0, (i + 1) / warm)
            * (1.0 if i < 0.8 * cfg.steps else max(0.0, (cfg.steps - i) / (0.2 * cfg.steps)))
        ),
    )
    since_fired = torch.zeros(cfg.n_latents)
    history = []
    bar = tqdm(range(cfg.steps), desc=f"train SAE {cfg.name()}", disable=not progress)
    for step in bar:
        xb = xs[torch.randint(n, (cfg.batch,), generator=g)]
        pre = sae.pre_acts(xb)
        f = sae.activate(pre)
        rec = sae.decode(f)
        err = rec - xb
        mse = err.pow(2).sum(1).mean() / var_total
        loss = mse
        fired = (f > 0).any(0)
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + cfg.batch)
        aux = torch.zeros(())
        if cfg.kind == "relu":
            loss = loss + cfg.l1 * (f * sae.W_dec.norm(dim=1)).sum(1).mean()
        elif cfg.aux_k > 0:
            dead = since_fired >= cfg.dead_after
            n_dead = int(dead.sum())
            if n_dead > 0:
                kk = min(cfg.aux_k, n_dead)
                masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
                top = masked.topk(kk, dim=-1)
                fa = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
                aux_rec = fa @ sae.W_dec
                target = (xb - rec).detach()
                aux = (aux_rec - target).pow(2).sum(1).mean() / target.pow(2).sum(
                    1
                ).mean().clamp_min(1e-8)
                loss = loss + cfg.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        sae.normalise_decoder()
        if step % 50 == 0 or step == cfg.steps - 1:
            l0 = float((f > 0).float().sum(1).mean())
            history.append(
                {"step": step, "nmse": float(mse.detach()), "l0": l0, "aux": float(aux.detach())}
            )
            bar.set_postfix(nmse=f"{history[-1]['nmse']:.4f}", l0=f"{l0:.1f}")
    # fold the input scale back: f_raw = s f, so b_enc, b_dec scale by s; W_enc, W_dec stay
    with torch.no_grad():
        sae.b_enc.mul_(s)
        sae.b_dec.mul_(s)
        sae.log_sparsity.copy_(firing_log10(sae, x_all))
    stats = {
        "train_seconds": round(time.perf_counter() - t0, 1),
        "input_scale": s,
        "n_train": n,
        "history": history,
        "train_eval": evaluate_sae(sae, x_all),
    }
    sae.meta = {"plateau": {"config": asdict(cfg), "stats": stats}}
    return sae.eval(), stats


# ---------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_sae(sae: SAE, acts: Float[Tensor, "n d_in"], batch: int = 1024) -> dict[str, float]:
    """Variance explained (1 - SSE / total sum of squares about the mean of ``acts``), L0 (mean
    active latents per row), MSE per row (summed over dims), the fraction of latents that never
    fire on ``acts`` (``dead_fraction``) and the fraction dead by the SAE's stored training-set
    sparsity (``dead_fraction_train``: log10 frequency at the -10 floor)."""
    x = acts.float()
    sse, l0, fired = 0.0, 0.0, torch.zeros(sae.n_latents, dtype=torch.bool)
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        f = sae.encode(xb)
        sse += float((sae.decode(f) - xb).pow(2).sum())
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(0)
    sst = float((x - x.mean(0)).pow(2).sum())
    return {
        "variance_explained": 1.0 - sse / sst,
        "l0": l0 / len(x),
        "mse": sse / len(x),
        "dead_fraction": float((~fired).float().mean()),
        "dead_fraction_train": float(sae.dead_mask().float().mean()),
        "n": len(x),
    }


# ---------------------------------------------------------------------------------- disk format
def _saelens_cfg(sae: SAE, extra: dict[str, Any]) -> dict[str, Any]:
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
        cfg = _saelens_cfg(sae, dict(extra_cfg or {}))
        if sae.meta:
            cfg["plateau"] = sae.meta.get("plateau", sae.meta)
        (tmp / CFG_FILE).write_text(json.dumps(cfg, indent=1))
    return out_dir


def _kind_from_cfg(cfg: dict[str, Any], file: str) -> tuple[str, int]:
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


def _load_dir(path: Path) -> SAE:
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
    kind, k = _kind_from_cfg(cfg, str(cfg_path))
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


def load_sae(source: str | Path) -> SAE:
    """An SAE from a directory (ours or SAELens') or ``saelens:<release>/<sae_id>`` (the hub)."""
    s = str(source)
    if s.startswith("saelens:"):
        release, _, sae_id = s[len("saelens:") :].partition("/")
        sae = _load_dir(download_pretrained(release, sae_id))
        sae.meta["release"], sae.meta["sae_id"] = release, sae_id
        return sae
    path = Path(source)
    if not path.is_dir():
        raise ConfigError("SAE directory does not exist", file=str(path))
    return _load_dir(path)


# ---------------------------------------------------------------------------------- tracks
def track_sae_dir(track, cfg: SAEConfig | None = None) -> Path:
    from challenge.models import cache_root

    cfg = cfg or SAEConfig()
    return cache_root() / "saes" / track.spec.track_id / f"v{track.spec.version}" / cfg.name()


@torch.no_grad()
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
    from challenge.models import load_model

    lm = lm or load_model(track.spec.model)
    eng = track.engine(lm, progress=False)
    name, toks, out = f"blocks.{eng.start}.hook_resid_pre", track.tokens("public"), []
    for i in range(0, len(toks), batch):
        _, cache = lm.model.run_with_cache(
            toks[i : i + batch].to(eng.device),
            names_filter=lambda n: n == name,
            stop_at_layer=eng.start + 1,
        )
        out.append(cache[name][:, 1:].reshape(-1, cache[name].shape[-1]).float().cpu())
    return torch.cat(out)


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


# ---------------------------------------------------------------------------------- P3 sets
@torch.no_grad()
def sae_direction_sets(
    sae: SAE, track, n_base: int = 100, seed: int = 0
) -> dict[str, Float[Tensor, "n_base d_model"]]:
    """Unit directions per base activation for P3, for the same context rows ``run_p3`` uses:
    a decoder row of a latent active at x, of an alive latent inactive at x, of a dead latent
    (omitted when the SAE has none), and the SAE error SAE(x) - x. Latents are drawn uniformly
    within each class with ``seed`` (``challenge.directions.pick_latent_per_class``)."""
    from challenge.directions import classify_latents, pick_latent_per_class, sae_decoder_directions
    from challenge.protocols import _sample

    ctx = track.acts("context")
    idx = _sample(len(ctx), n_base, seed)
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
