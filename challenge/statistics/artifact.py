"""The statistics artifact of a track: aggregates of the public split, each over >= k rows.

The statistics tier's generators never see a real row: they get this artifact (and the track's
SAE). :func:`build_statistics` computes it from the *public* split only; every statistic records
the rows it aggregates (``TrackStatistics.rows[name]``: one count per entry, e.g. per token or
per latent) and :func:`check_k` refuses an artifact in which any entry aggregates fewer than
``k`` rows. What it holds (``N`` public rows, ``d`` = d_model, ``T`` tokens with >= k rows,
``L`` latents firing on >= k rows, ``Q`` quantile levels, ``P`` co-firing pairs):

| statistic | shape | rows aggregated per entry |
|---|---|---|
| ``mean``, ``cov`` | ``[d]``, ``[d, d]`` | N |
| ``norm_quantiles``, ``norm_levels`` | ``[Q]`` | N |
| ``token_ids``, ``token_counts`` | ``[T]`` | the token's rows |
| ``token_other_count`` | ``[1]`` | the pooled rows of every other token (omitted when none) |
| ``token_means``, ``token_vars`` | ``[T, d]`` | the token's rows |
| ``token_within_cov`` | ``[d, d]`` | the rows of the tokens with >= max(k, 2) rows |
| ``latent_ids``, ``latent_counts``, ``latent_value_mean`` | ``[L]`` | rows where the latent fires |
| ``latent_value_quantiles``, ``latent_value_levels`` | ``[L, Q]`` | rows where the latent fires |
| ``cofiring_pairs``, ``cofiring_counts`` | ``[P, 2]``, ``[P]`` | rows where both fire |
| ``token_profiles`` | ``[T, L]`` | the token's rows (mean SAE code over them) |
| ``l0_values``, ``l0_counts`` (+ ``l0_other_count``) | ``[B]`` | rows with that L0 |
| ``latent_norm_mean`` | ``[1]`` | N (mean norm of ``decode(f) - b_dec``) |

Rare things are pooled, never listed: a token or L0 value with < k rows joins "other" (and when
"other" would hold 1..k-1 rows, the least frequent listed ones join it until it holds >= k); a
latent firing on < k rows appears nowhere (not in the profiles either); a co-firing pair is kept
only with >= k rows. A quantile never sits on a lone extreme row: its level is pulled into
``[(k-1)/(n-1), (n-k)/(n-1)]`` so that >= k rows lie at or below and at or above it (every level
is the median when ``n < 2k - 1``); the levels used are published beside the values.

On disk (``save_statistics``; ``load_statistics`` verifies every file first)::

    <dir>/statistics.safetensors   the statistics and, as "rows.<name>", their row counts
    <dir>/statistics.json          track, split, SAE, config, per-statistic shape and min rows
    <dir>/README.md                the dataset card
    <dir>/manifest.json            {"format", "track_id", "version", "k", "sha256", "files"}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from challenge import checks
from challenge.errors import ConfigError, TrackIntegrityError

FORMAT = "plateau-statistics/1"
TENSORS_FILE, META_FILE, CARD_FILE, MANIFEST = (
    "statistics.safetensors",
    "statistics.json",
    "README.md",
    "manifest.json",
)
ROWS_PREFIX = "rows."
DEFAULT_K = 10
"""Default minimum rows per aggregate (docs/integrity.md, "The statistics tier and its
artifact": no attack candidate within the copy check's tau from k = 3 on, 10 for margin)."""
GLOBAL = frozenset(
    {"mean", "cov", "norm_quantiles", "norm_levels", "token_other_count", "token_within_cov"}
    | {"l0_other_count", "latent_norm_mean"}
)
"""Statistics with one aggregate (one row count); every other one has one per first-axis entry."""
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

DESCRIPTIONS = {
    "mean": "mean of the public rows",
    "cov": "covariance of the public rows (unbiased)",
    "norm_quantiles": "quantiles of the row norms at norm_levels",
    "norm_levels": "the quantile levels used (the grid pulled in to k rows from either end)",
    "token_ids": "last tokens with >= k public rows",
    "token_counts": "public rows per listed last token",
    "token_other_count": "public rows whose last token is not listed (pooled)",
    "token_means": "mean of the rows ending in each listed token",
    "token_vars": "per-coordinate variance (unbiased; 0 for one row) of each listed token's rows",
    "token_within_cov": "within-token covariance pooled over listed tokens with >= 2 rows",
    "latent_ids": "SAE latents firing on >= k public rows",
    "latent_counts": "public rows on which each listed latent fires",
    "latent_value_mean": "mean value of each listed latent over the rows where it fires",
    "latent_value_quantiles": "quantiles of each listed latent's value where it fires",
    "latent_value_levels": "the quantile levels used per latent",
    "cofiring_pairs": "latent pairs (ids) firing together on >= k rows (the most frequent first)",
    "cofiring_counts": "rows on which each pair fires together",
    "token_profiles": "mean SAE code (listed latents only) over each listed token's rows",
    "l0_values": "SAE L0 values of >= k rows",
    "l0_counts": "rows per listed L0 value",
    "l0_other_count": "rows whose L0 value is not listed (pooled)",
    "latent_norm_mean": "mean norm of the SAE's latent part decode(f) - b_dec",
}


@dataclass
class StatisticsConfig:
    """What the artifact holds and the minimum rows each aggregate needs."""

    k: int = DEFAULT_K
    """every statistic aggregates at least this many public rows"""
    quantiles: tuple[float, ...] = QUANTILES
    """quantile grid of the norms and latent values (increasing, in [0, 1])"""
    max_cofiring_pairs: int = 65536
    """co-firing pairs kept (the most frequent, each with >= k rows)"""
    token_variance: bool = True
    """publish the per-token per-coordinate variances"""
    latent_profiles: bool = True
    """publish the per-token mean SAE codes"""
    batch: int = 512
    """rows encoded by the SAE at a time"""

    def __post_init__(self) -> None:
        checks.integer(self.k, "k", minimum=1)
        checks.sequence(self.quantiles, "quantiles", nonempty=True)
        for q in self.quantiles:
            checks.number(q, "quantiles", minimum=0.0)
        qs = list(self.quantiles)
        if max(qs) > 1 or any(b <= a for a, b in zip(qs, qs[1:], strict=False)):
            raise ConfigError(f"must increase strictly within [0, 1], got {qs}", field="quantiles")
        self.quantiles = tuple(float(q) for q in qs)
        checks.integer(self.max_cofiring_pairs, "max_cofiring_pairs", minimum=0)
        checks.boolean(self.token_variance, "token_variance")
        checks.boolean(self.latent_profiles, "latent_profiles")
        checks.integer(self.batch, "batch", minimum=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"quantiles": list(self.quantiles)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StatisticsConfig:
        try:
            return cls(**{**d, "quantiles": tuple(d.get("quantiles", QUANTILES))})
        except TypeError as e:
            raise ConfigError(f"malformed statistics config: {e}", field="config") from e


@dataclass
class TrackStatistics:
    """The artifact in memory: ``tensors[name]`` and ``rows[name]`` (int64, one count per entry
    of the statistic's first axis; ``[1]`` for a global statistic), and ``meta``."""

    tensors: dict[str, Tensor]
    rows: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str, default: Tensor | None = None) -> Tensor | None:
        return self.tensors.get(name, default)

    @property
    def k(self) -> int:
        return int(self.meta["config"]["k"])

    @property
    def d_model(self) -> int:
        return int(self.meta["d_model"])

    @property
    def n_rows(self) -> int:
        return int(self.meta["n_rows"])

    @property
    def config(self) -> StatisticsConfig:
        return StatisticsConfig.from_dict(self.meta["config"])


# ------------------------------------------------------------------------------ building
def k_levels(levels: Tensor, n: int, k: int) -> Tensor:
    """Quantile levels for ``n`` values such that >= ``k`` values lie at or below and at or
    above each (linear interpolation between order statistics): clipped to
    ``[(k-1)/(n-1), (n-k)/(n-1)]``, all 0.5 when ``n < 2k - 1``."""
    levels = levels.double()
    if n <= 1:
        return torch.zeros_like(levels)
    if n < 2 * k - 1:
        return torch.full_like(levels, 0.5)
    return levels.clamp((k - 1) / (n - 1), (n - k) / (n - 1))


def k_quantiles(values: Tensor, levels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(quantiles, levels used) of 1-D ``values`` at :func:`k_levels`."""
    lv = k_levels(levels, len(values), k)
    return torch.quantile(values.double(), lv), lv


def pool_rare(
    ids: Int[Tensor, " m"], counts: Int[Tensor, " m"], k: int
) -> tuple[Tensor, Tensor, int]:
    """(listed ids, their counts, pooled count): ids with >= ``k`` rows are listed (most rows
    first, then by id); when the pool would hold 1..k-1 rows, the least frequent listed ids join
    it until it holds >= k (or nothing is listed)."""
    order = sorted(range(len(ids)), key=lambda i: (-int(counts[i]), int(ids[i])))
    ids, counts = ids[order], counts[order]
    keep = int((counts >= k).sum())
    other = int(counts[keep:].sum())
    while 0 < other < k and keep > 0:
        keep -= 1
        other += int(counts[keep])
    return ids[:keep].clone(), counts[:keep].clone(), other


@torch.no_grad()
def sae_codes(sae, acts: Float[Tensor, "n d"], batch: int = 512) -> Float[Tensor, "n L"]:
    """Dense SAE codes of ``acts`` (float32), ``batch`` rows at a time."""
    parts = [sae.encode(acts[i : i + batch].float()).float() for i in range(0, len(acts), batch)]
    return torch.cat(parts) if parts else torch.zeros(0, sae.n_latents)


def _cofiring(fires: Tensor, k: int, cap: int) -> tuple[Tensor, Tensor]:
    """Latent pairs (i < j) firing together on >= k rows, the ``cap`` most frequent (ties by
    ids), and their counts."""
    n_lat = fires.shape[1]
    keys = []
    for i in range(0, len(fires), 256):
        f = fires[i : i + 256]
        width = max(int(f.sum(1).max()), 1) if len(f) else 1
        top = f.float().topk(min(width, n_lat), dim=1)
        idx = torch.where(top.values > 0, top.indices, torch.full_like(top.indices, -1))
        a, b = torch.triu_indices(idx.shape[1], idx.shape[1], offset=1)
        ia, ib = idx[:, a], idx[:, b]
        ok = (ia >= 0) & (ib >= 0)
        lo, hi = torch.minimum(ia, ib)[ok], torch.maximum(ia, ib)[ok]
        keys.append(lo * n_lat + hi)
    if not keys or not sum(len(x) for x in keys):
        return torch.zeros(0, 2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    uniq, counts = torch.unique(torch.cat(keys), return_counts=True)
    ok = counts >= k
    uniq, counts = uniq[ok], counts[ok]
    order = torch.argsort(-counts, stable=True)[:cap]  # uniq is sorted: ties by ids
    uniq, counts = uniq[order], counts[order]
    return torch.stack([uniq // n_lat, uniq % n_lat], 1), counts


def _sae_info(sae) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": sae.kind, "n_latents": int(sae.n_latents), "d_in": sae.d_in}
    if sae.kind == "topk":
        info["k"] = int(sae.k)
    src = sae.meta.get("source")
    if src and (Path(src) / "cfg.json").exists():
        from challenge.store import sae_checksum

        info["name"], info["sha256"] = Path(src).name, sae_checksum(src)
    return info


@torch.no_grad()
def build_statistics(track, sae, cfg: StatisticsConfig | None = None) -> TrackStatistics:
    """The artifact of ``track``'s public split (only ``acts("public")`` and
    ``tokens("public")`` are read) with the SAE ``sae``; ``check_k`` holds on the result."""
    cfg = cfg or StatisticsConfig()
    k, levels = cfg.k, torch.tensor(cfg.quantiles, dtype=torch.float64)
    x = track.acts("public").double()
    last = track.tokens("public")[:, -1].long()
    N, d = x.shape
    if N < max(k, 2):
        raise ConfigError(f"the public split has {N} rows, fewer than k={k} (or 2)", field="k")
    t: dict[str, Tensor] = {}
    r: dict[str, Tensor] = {}

    def put(name: str, value: Tensor, rows: Tensor | int) -> None:
        t[name] = value.contiguous()
        r[name] = torch.as_tensor(rows, dtype=torch.int64).reshape(-1).clone()

    # global moments
    put("mean", x.mean(0), N)
    put("cov", torch.cov(x.T).reshape(d, d), N)
    nq, nl = k_quantiles(x.norm(dim=1), levels, k)
    put("norm_quantiles", nq, N)
    put("norm_levels", nl, N)

    # last tokens
    uniq, inv, counts = torch.unique(last, return_inverse=True, return_counts=True)
    tok_ids, tok_counts, other = pool_rare(uniq, counts, k)
    put("token_ids", tok_ids, tok_counts)
    put("token_counts", tok_counts, tok_counts)
    if other:
        put("token_other_count", torch.tensor([other]), other)
    pos = {int(v): i for i, v in enumerate(tok_ids)}
    row_tok = torch.tensor([pos.get(int(v), -1) for v in last], dtype=torch.int64)
    listed = row_tok >= 0
    T = len(tok_ids)
    sums = torch.zeros(T, d, dtype=torch.float64).index_add_(0, row_tok[listed], x[listed])
    means = sums / tok_counts.clamp_min(1)[:, None].double()
    put("token_means", means, tok_counts)
    resid = x[listed] - means[row_tok[listed]]
    if cfg.token_variance:
        ss = torch.zeros(T, d, dtype=torch.float64).index_add_(0, row_tok[listed], resid**2)
        put("token_vars", ss / (tok_counts - 1).clamp_min(1)[:, None].double(), tok_counts)
    multi = listed.clone()
    multi[listed] = tok_counts[row_tok[listed]] >= 2
    n_multi_tokens = int((tok_counts >= 2).sum())
    dof = int(multi.sum()) - n_multi_tokens
    if dof >= 2:
        e = x[multi] - means[row_tok[multi]]
        put("token_within_cov", e.T @ e / dof, int(multi.sum()))

    # SAE latents
    f = sae_codes(sae, x.float(), cfg.batch).double()
    fires = f > 0
    lat_counts_all = fires.sum(0)
    lat_ids = torch.nonzero(lat_counts_all >= k).flatten()
    lat_counts = lat_counts_all[lat_ids]
    put("latent_ids", lat_ids, lat_counts)
    put("latent_counts", lat_counts, lat_counts)
    put("latent_value_mean", f[:, lat_ids].sum(0) / lat_counts.clamp_min(1).double(), lat_counts)
    vq = torch.zeros(len(lat_ids), len(levels), dtype=torch.float64)
    vl = torch.zeros_like(vq)
    for i, j in enumerate(lat_ids.tolist()):
        vq[i], vl[i] = k_quantiles(f[fires[:, j], j], levels, k)
    put("latent_value_quantiles", vq, lat_counts)
    put("latent_value_levels", vl, lat_counts)
    pairs, pair_counts = _cofiring(fires, k, cfg.max_cofiring_pairs)
    put("cofiring_pairs", pairs, pair_counts)
    put("cofiring_counts", pair_counts, pair_counts)
    if cfg.latent_profiles:
        prof = torch.zeros(T, len(lat_ids), dtype=torch.float64)
        prof.index_add_(0, row_tok[listed], f[listed][:, lat_ids])
        put("token_profiles", prof / tok_counts.clamp_min(1)[:, None].double(), tok_counts)
    l0 = fires.sum(1)
    l0_uniq, l0_cnt = torch.unique(l0, return_counts=True)
    l0_ids, l0_counts, l0_other = pool_rare(l0_uniq, l0_cnt, k)
    put("l0_values", l0_ids, l0_counts)
    put("l0_counts", l0_counts, l0_counts)
    if l0_other:
        put("l0_other_count", torch.tensor([l0_other]), l0_other)
    latent_part = f.float() @ sae.W_dec.detach().float()
    put("latent_norm_mean", latent_part.double().norm(dim=1).mean().reshape(1), N)

    # float64 for the moments the generators factorise, float32 for the rest
    keep64 = {"mean", "cov", "token_within_cov"}
    for name, v in t.items():
        if v.is_floating_point() and name not in keep64:
            t[name] = v.float()
    meta = {
        "format": FORMAT,
        "track_id": track.spec.track_id,
        "version": str(track.spec.version),
        "split": "public",
        "n_rows": N,
        "d_model": d,
        "track_manifest_sha256": getattr(track, "manifest_sha256", None),
        "sae": _sae_info(sae),
        "config": cfg.to_dict(),
    }
    stats = TrackStatistics(t, r, meta)
    stats.meta["statistics"] = describe(stats)
    check_k(stats)
    return stats


def describe(stats: TrackStatistics) -> dict[str, dict[str, Any]]:
    """Per statistic: shape, dtype, the fewest rows one of its entries aggregates, meaning."""
    return {
        name: {
            "shape": list(v.shape),
            "dtype": str(v.dtype).removeprefix("torch."),
            "entries": int(stats.rows[name].numel()) if name in stats.rows else None,
            "min_rows": int(stats.rows[name].min())
            if name in stats.rows and stats.rows[name].numel()
            else None,
            "description": DESCRIPTIONS.get(name, ""),
        }
        for name, v in sorted(stats.tensors.items())
    }


def check_k(stats: TrackStatistics, k: int | None = None) -> None:
    """Every statistic records its rows, one count per entry, and every count is >= ``k``
    (default: the artifact's own k); ``ConfigError`` naming the first statistic that fails."""
    k = stats.k if k is None else k
    for name in sorted(stats.tensors):
        v, rows = stats.tensors[name], stats.rows.get(name)
        if rows is None:
            raise ConfigError("records no row counts", field=name)
        entries = 1 if name in GLOBAL or not v.ndim else v.shape[0]
        if rows.ndim != 1 or rows.numel() != entries:
            raise ConfigError(f"has {entries} entries but {rows.numel()} row counts", field=name)
        if rows.numel() and int(rows.min()) < k:
            i = int(rows.argmin())
            raise ConfigError(
                f"entry {i} aggregates {int(rows[i])} rows, fewer than k={k}", field=name
            )
    extra = sorted(set(stats.rows) - set(stats.tensors))
    if extra:
        raise ConfigError(f"row counts without a statistic: {extra}", field="rows")


# ------------------------------------------------------------------------------ on disk
def card(stats: TrackStatistics) -> str:
    """The dataset card (README.md) of an artifact."""
    m = stats.meta
    rows = "\n".join(
        f"| `{n}` | {tuple(s['shape'])} | {s['min_rows']} | {s['description']} |"
        for n, s in describe(stats).items()
    )
    sae = m["sae"]
    return f"""---
license: apache-2.0
tags: [interpretability, activation-plateaus, residual-stream, plateau-challenge, statistics]
---
# Statistics of {m["track_id"]} v{m["version"]} (k = {stats.k})

Aggregate statistics of the **{m["split"]}** split ({m["n_rows"]} rows, d_model {m["d_model"]})
of the plateau-challenge track `{m["track_id"]}` v{m["version"]}, for the statistics tier: its
generators see this artifact and the track's SAE, never a real row.

Every statistic aggregates at least **k = {stats.k}** public rows (per entry: per token, per
latent, per pair); tokens, latents and L0 values with fewer rows are pooled or left out, and
quantile levels are pulled in so that >= k rows lie on either side of each published quantile.
`statistics.safetensors` holds each statistic and, as `rows.<name>`, the rows each of its
entries aggregates; `challenge.statistics.check_k` verifies them. SAE statistics use the
track's SAE `{sae.get("name", "?")}` ({sae["kind"]}, {sae["n_latents"]} latents, sha256
`{sae.get("sha256", "?")}`).

| statistic | shape | min rows | meaning |
|---|---|---|---|
{rows}

Config: `{json.dumps(m["config"], sort_keys=True)}`. Load with
`challenge.statistics.load_statistics(<dir>)`, which verifies `manifest.json` first.
"""


def _meta_json(stats: TrackStatistics) -> str:
    meta = dict(stats.meta) | {"statistics": describe(stats)}
    return json.dumps(meta, indent=1, sort_keys=True, default=str)


def _files_checksum(files: dict[str, dict[str, Any]]) -> str:
    lines = "".join(f"{name} {files[name]['sha256']}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def save_statistics(stats: TrackStatistics, out_dir: str | Path) -> dict[str, Any]:
    """Write the artifact atomically (``check_k`` first) and return its manifest."""
    from safetensors.torch import save_file

    from challenge.results import atomic_dir
    from challenge.store import sha256_file

    check_k(stats)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise ConfigError(
            "exists, is not empty and is not a statistics artifact; refusing to replace it",
            file=str(out_dir),
        )
    with atomic_dir(out_dir) as tmp:
        blob = {n: v.contiguous() for n, v in stats.tensors.items()}
        blob |= {ROWS_PREFIX + n: v.contiguous() for n, v in stats.rows.items()}
        save_file(blob, str(tmp / TENSORS_FILE), metadata={"format": FORMAT})
        (tmp / META_FILE).write_text(_meta_json(stats))
        (tmp / CARD_FILE).write_text(card(stats))
        files = {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "track_id": stats.meta["track_id"],
            "version": stats.meta["version"],
            "k": stats.k,
            "sha256": _files_checksum(files),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify_statistics(art_dir: str | Path) -> dict[str, Any]:
    """Check every file of an artifact against its manifest; ``TrackIntegrityError`` naming the
    file on a missing, extra or changed file."""
    from challenge.store import read_manifest, verify_listed_files

    art_dir = Path(art_dir)
    mpath = art_dir / MANIFEST
    manifest = read_manifest(mpath, "statistics artifact")
    files = manifest["files"]
    if manifest.get("format") != FORMAT:
        raise TrackIntegrityError(
            f"unknown format {manifest.get('format')!r}, expected {FORMAT}",
            file=str(mpath),
            field="format",
        )
    for need in (TENSORS_FILE, META_FILE):
        if need not in files:
            raise TrackIntegrityError(f"the manifest does not list {need}", file=str(mpath))
    verify_listed_files(art_dir, files, MANIFEST)
    if _files_checksum(files) != manifest.get("sha256"):
        raise TrackIntegrityError("checksum mismatch", file=str(mpath), field="sha256")
    return manifest


def load_statistics(art_dir: str | Path, verify: bool = True) -> TrackStatistics:
    """An artifact from disk: the manifest verified (unless ``verify=False``), then
    ``check_k``."""
    from safetensors.torch import load_file

    art_dir = Path(art_dir)
    manifest = verify_statistics(art_dir) if verify else None
    meta = json.loads((art_dir / META_FILE).read_text())
    blob = load_file(str(art_dir / TENSORS_FILE))
    rows = {n[len(ROWS_PREFIX) :]: v for n, v in blob.items() if n.startswith(ROWS_PREFIX)}
    tensors = {n: v for n, v in blob.items() if not n.startswith(ROWS_PREFIX)}
    stats = TrackStatistics(tensors, rows, meta)
    if manifest is not None:
        for key in ("track_id", "version"):
            if str(manifest.get(key)) != str(meta.get(key)):
                raise TrackIntegrityError(
                    f"statistics.json says {meta.get(key)!r}, manifest {manifest.get(key)!r}",
                    file=str(art_dir / META_FILE),
                    field=key,
                )
    check_k(stats)
    return stats
