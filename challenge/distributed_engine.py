"""The perturbation engine on Ray workers: each forward chunk of ``curves`` on a worker.

:func:`distribute` turns a :class:`~challenge.engine.PerturbationEngine` into one whose
``curves`` sends each forward chunk (``max_rows // steps`` curves, the chunks the engine cuts
anyway) to a worker of ``challenge.distributed`` (chunk ``i`` of every call to worker
``i mod N``, so repeated calls on the same contexts hit the same worker's prefix cache). Every
protocol, scorer probe and study runs unchanged on it, and the numbers are those of the
single-process run bit for bit: a worker computes exactly the forward the single process would
(same rows in the same batch, same prefix), while the driver keeps every decision between calls
(bisection rounds, AP stopping) and draws every random number. Bit equality needs the same
device kind and the same intra-op threads per process as the single-process run
(``cpus_per_worker``): a multi-threaded CPU reduction reorders the sum of H(p_0) over the
vocabulary (measured: 1.7e-5 on CE between 1 and 2 threads; L2, KL and JS were identical).
Inside ``challenge.distributed.resumable`` the chunks are written as they finish (keyed by
their content) and read back by a rerun.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from challenge.distributed import DistributedConfig, digest, map_items, pickled, worker_model
from challenge.engine import Curves, EngineConfig, PerturbationEngine
from challenge.errors import ConfigError
from challenge.models import ModelSpec

_ENGINES: dict[str, PerturbationEngine] = {}


def worker_engine(spec: ModelSpec, cfg: EngineConfig) -> PerturbationEngine:
    """A perturbation engine over ``worker_model(spec)``, one per engine config and process (its
    prefix cache then serves every chunk of the same contexts)."""
    key = json.dumps([asdict(spec), asdict(cfg)], sort_keys=True)
    if key not in _ENGINES:
        _ENGINES[key] = PerturbationEngine(worker_model(spec).model, cfg)
    return _ENGINES[key]


@dataclass
class CurvesChunk:
    """One forward chunk of :meth:`PerturbationEngine.curves`, as sent to a worker."""

    model: ModelSpec
    engine: EngineConfig
    tokens: Int[np.ndarray, "batch pos"]
    paths: Float[np.ndarray, "batch step d_model"]
    options: dict[str, Any] = field(default_factory=dict)
    """``curves`` keywords: return_read, capture_mlp_pre, keep_mlp_pre, reduce, max_rows, js."""


def curves_chunk(chunk: CurvesChunk) -> Curves:
    """A chunk's curves on this process's engine (one forward: the chunk holds at most
    ``max_rows // steps`` curves)."""
    eng = worker_engine(chunk.model, chunk.engine)
    return eng.curves(
        torch.from_numpy(chunk.tokens), torch.from_numpy(chunk.paths), **chunk.options
    )


def chunk_key(chunk: CurvesChunk) -> str:
    """A chunk's identity: model, engine config, inputs, options and library versions."""
    reduce = chunk.options.get("reduce")
    opts = {k: v for k, v in chunk.options.items() if k != "reduce"}
    return digest(
        chunk.model,
        {k: v for k, v in asdict(chunk.engine).items() if k != "progress"},
        opts,
        hashlib.sha256(pickled(reduce)).hexdigest() if reduce is not None else None,
        torch.__version__,
        chunk.tokens,
        chunk.paths,
    )


class DistributedEngine(PerturbationEngine):
    """A :class:`PerturbationEngine` whose :meth:`curves` runs chunk by chunk on the workers
    (everything else runs here, on the local engine's model)."""

    chunk_fn: Callable[[CurvesChunk], Curves] = staticmethod(curves_chunk)
    """What a worker runs per chunk (tests wrap it to kill a worker)."""

    def __init__(self, engine: PerturbationEngine, model: ModelSpec, cfg: DistributedConfig):
        self.__dict__.update(engine.__dict__)  # the same model, tail runner and prefix cache
        self.spec, self.dist = model, cfg

    def curves(
        self,
        tokens: Int[Tensor, "batch pos"],
        paths: Float[Tensor, "batch step d_model"],
        *,
        return_read: bool = False,
        capture_mlp_pre: bool = False,
        keep_mlp_pre: bool = True,
        reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
        max_rows: int | None = None,
        desc: str = "curves",
        js: bool = True,
    ) -> Curves:
        """:meth:`PerturbationEngine.curves`, each chunk of ``max_rows // steps`` curves computed
        by a worker (``reduce`` must be picklable)."""
        tokens = torch.as_tensor(tokens)
        paths = torch.as_tensor(paths, dtype=torch.float32)
        B, S, _ = paths.shape
        if tokens.shape[0] != B:
            raise ConfigError(f"{tokens.shape[0]} contexts for {B} paths", field="tokens")
        rows = max_rows or self.cfg.max_rows
        per = max(1, rows // S)
        opts = dict(
            return_read=return_read,
            capture_mlp_pre=capture_mlp_pre,
            keep_mlp_pre=keep_mlp_pre,
            reduce=reduce,
            max_rows=rows,
            js=js,
        )
        engine_cfg = EngineConfig(**{**asdict(self.cfg), "progress": False})
        chunks = [
            CurvesChunk(
                self.spec,
                engine_cfg,
                tokens[i : i + per].cpu().numpy(),
                paths[i : i + per].cpu().numpy(),
                opts,
            )
            for i in range(0, B, per)
        ]
        bar = desc if self.cfg.progress and len(chunks) > 1 else None
        curves = Curves.cat(map_items(self.chunk_fn, chunks, self.dist, key=chunk_key, desc=bar))
        curves.meta = self.describe()
        return curves


def distribute(
    engine: PerturbationEngine, model: ModelSpec, cfg: DistributedConfig | None
) -> PerturbationEngine:
    """``engine`` with its curves computed on the workers of ``cfg`` (whose processes load
    ``model``), or ``engine`` itself when ``cfg`` runs in this process."""
    if cfg is None or not cfg.enabled:
        return engine
    return DistributedEngine(engine, model, cfg)
