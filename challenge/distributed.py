"""Scale-out on Ray: independent work items mapped over worker processes, one model each.

:func:`map_items` maps a picklable function over a list of independent items (atlas cells, the
perturbation engine's chunks: ``challenge.distributed_engine``) on the workers of a
:class:`DistributedConfig` and returns the results in item order. A work function gets the
worker's model from :func:`worker_model` (loaded once per process, on its GPU when it has one).

Fault tolerance: a worker that dies is restarted and its pending items retried
(``max_retries``). Inside :func:`resumable` every finished item is also written to disk (temp
file + rename) under a run directory keyed by the run's inputs, and a rerun of the same inputs
reads written items back instead of computing them; the directory is removed when the outermost
run completes. Items are keyed by their content, so a rerun that replays the same decisions
(the rounds of a bisection) finds them again.

With ``workers == 0`` and no ``address`` (the default) nothing changes: everything runs in this
process, as without the option. Ray is an optional dependency (``pip install
'plateau-challenge[distributed]'``), imported only when work leaves the process. This module
imports neither torch nor the model libraries at import time, so that a worker restarts quickly
for work that does not need them. docs/scaling.md has the cluster recipe and cost model,
docs/decisions.md why Ray rather than ``torch.distributed``.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

import challenge
from challenge import checks
from challenge.errors import ConfigError

if TYPE_CHECKING:  # imported lazily: torch and TransformerLens take seconds to import
    from challenge.models import LoadedModel, ModelSpec

log = logging.getLogger("distributed")
T = TypeVar("T")
R = TypeVar("R")

PASSED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "PLATEAU_CACHE", "TOKENIZERS_PARALLELISM")
"""Environment variables handed to the workers of a remote cluster (a local one inherits all)."""


@dataclass
class DistributedConfig:
    """Where the work runs: this process (the default), a local Ray cluster of ``workers``
    processes, or an existing cluster at ``address``."""

    workers: int = 0
    """Ray workers, each a process holding one model (on its GPU when the cluster has GPUs).
    0: run in this process, as without the option (with ``address``: one per GPU of the
    cluster, or per ``cpus_per_worker`` CPUs when it has none)."""
    address: str | None = None
    """An existing Ray cluster: ``auto`` (this machine joined it with ``ray start``) or
    ``ray://<head>:10001``. None: start a local cluster for this run."""
    cpus_per_worker: int = 1
    """CPU cores reserved per worker; also its torch threads."""
    gpus_per_worker: float | None = None
    """GPUs per worker. None: 1 when the cluster has GPUs, else 0."""
    max_retries: int = 3
    """Times a worker that died is restarted and its batches retried."""
    run_dir: Path | None = None
    """Where finished batches are written until the run completes, so that an interrupted run
    resumes (None: ``$PLATEAU_CACHE/runs``)."""
    keep_batches: bool = False
    """Keep the written batches after the run completes (a rerun then reads them all back)."""

    def __post_init__(self) -> None:
        checks.integer(self.workers, "workers", minimum=0)
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ConfigError(
                f"must be 'auto' or ray://host:port, got {self.address!r}", field="address"
            )
        checks.integer(self.cpus_per_worker, "cpus_per_worker", minimum=1)
        checks.number(self.gpus_per_worker, "gpus_per_worker", minimum=0, optional=True)
        checks.integer(self.max_retries, "max_retries", minimum=0)
        checks.boolean(self.keep_batches, "keep_batches")
        if self.run_dir is not None:
            self.run_dir = Path(self.run_dir)

    @property
    def enabled(self) -> bool:
        """Whether work leaves this process."""
        return self.workers > 0 or self.address is not None


# ---------------------------------------------------------------------------- worker side
_IN_WORKER = False
_MODELS: dict[str, LoadedModel] = {}
"""This process's models, by spec (``worker_model``)."""


def _spec_key(spec: ModelSpec) -> str:
    return json.dumps(asdict(spec), sort_keys=True)


def worker_model(spec: ModelSpec) -> LoadedModel:
    """The model of ``spec`` in this process: loaded on first use (on the GPU when there is
    one), then reused by every item this process computes. The first load on a machine runs
    alone (a file lock in the model cache), so that workers starting together on a fresh
    machine do not all fill its cache at once; later loads run in parallel."""
    from challenge.models import cache_root, default_device, load_model

    key = _spec_key(spec)
    if key not in _MODELS:
        root = cache_root() / "models"
        ready = root / f".ready-{digest(spec)[:16]}"
        if ready.exists():
            _MODELS[key] = load_model(spec, device=default_device())
        else:
            import fcntl

            root.mkdir(parents=True, exist_ok=True)
            with open(root / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                _MODELS[key] = load_model(spec, device=default_device())
                ready.touch()
    return _MODELS[key]


class _Worker:
    """A Ray actor: one long-lived process that runs work functions (and keeps their models)."""

    def __init__(self, threads: int):
        global _IN_WORKER
        _IN_WORKER = True  # work functions that map again run in here, not on the cluster
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for torch imported later, by the work
        self.threads = threads

    def _torch(self):
        import torch

        torch.set_num_threads(self.threads)
        return torch

    def run(self, fn: Callable[[Any], Any], item: Any) -> Any:
        if "torch" in sys.modules:  # work that brought torch in runs with our threads
            self._torch()
        return fn(item)

    def info(self) -> dict[str, Any]:
        torch = self._torch()
        return {
            "pid": os.getpid(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "threads": torch.get_num_threads(),
            "cpu_s": time.process_time(),
        }


# ---------------------------------------------------------------------------- the executor
class _Pool:
    """The Ray actors of one config, created on first use and kept for the process."""

    def __init__(self, cfg: DistributedConfig):
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "running distributed needs Ray: pip install 'plateau-challenge[distributed]'",
                field="workers",
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            if cfg.address is None:
                ray.init(
                    address="local",
                    num_cpus=cfg.workers * cfg.cpus_per_worker,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
                ray.init(
                    address=cfg.address,
                    runtime_env={"env_vars": env},
                    log_to_driver=False,
                    configure_logging=False,
                )
        res = ray.cluster_resources()
        gpus = cfg.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if res.get("GPU", 0) >= 1 else 0.0
        n = cfg.workers
        if n == 0:
            n = (
                int(res.get("GPU", 0) // gpus)
                if gpus
                else int(res.get("CPU", 1) // cfg.cpus_per_worker)
            )
        for name, per in (("GPU", gpus), ("CPU", cfg.cpus_per_worker)):
            if n * per > res.get(name, 0) + 1e-9:  # Ray would wait for them forever
                raise ConfigError(
                    f"{n} workers x {per:g} {name}s exceed the cluster's {res.get(name, 0):g}; "
                    "ask for fewer workers, or a fraction of a GPU each (--gpus-per-worker 0.5)",
                    field="workers",
                )
        actor = ray.remote(_Worker).options(
            num_cpus=cfg.cpus_per_worker,
            num_gpus=gpus,
            max_restarts=cfg.max_retries,
            max_task_retries=cfg.max_retries,
            scheduling_strategy="SPREAD",
        )
        self.actors = [actor.remote(cfg.cpus_per_worker) for _ in range(max(1, n))]

    def map(
        self, fn: Callable, items: dict[int, Any], done: Callable[[int, Any], None], bar=None
    ) -> None:
        """``done(i, fn(items[i]))`` as each result arrives; item ``i`` goes to actor ``i mod n``
        (the same contexts land on the same worker call after call). The first error is raised
        after every other item has finished (and been handed to ``done``)."""
        ray, n = self.ray, len(self.actors)
        refs = {self.actors[i % n].run.remote(fn, it): i for i, it in items.items()}
        error = None
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            i = refs.pop(ready[0])
            try:
                done(i, ray.get(ready[0]))
            except Exception as e:  # the first error is re-raised below
                error = error or e
            if bar is not None:
                bar.update()
        if error is not None:
            raise error

    def info(self) -> list[dict[str, Any]]:
        return self.ray.get([a.info.remote() for a in self.actors])


_POOLS: dict[str, _Pool] = {}


def _pool(cfg: DistributedConfig) -> _Pool:
    key = json.dumps(
        [cfg.workers, cfg.address, cfg.cpus_per_worker, cfg.gpus_per_worker, cfg.max_retries]
    )
    if key not in _POOLS:
        _POOLS[key] = _Pool(cfg)
    return _POOLS[key]


def workers_info(cfg: DistributedConfig) -> list[dict[str, Any]]:
    """``pid``, ``device``, torch ``threads`` and CPU seconds used so far (``cpu_s``) of each
    worker of ``cfg`` (starting them)."""
    return _pool(cfg).info()


def shutdown() -> None:
    """Stop the workers, and the local Ray cluster when this process started one."""
    _POOLS.clear()
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


# ---------------------------------------------------------------------------- resuming
class _Store:
    """Finished items of one run, one pickle per item key, written atomically."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> tuple[bool, Any]:
        p = self.path / f"{key}.pkl"
        if not p.exists():
            return False, None
        with open(p, "rb") as f:
            return True, pickle.load(f)

    def put(self, key: str, value: Any) -> None:
        tmp = self.path / f".{key}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.path / f"{key}.pkl")


_STORE: contextvars.ContextVar[_Store | None] = contextvars.ContextVar("store", default=None)
STATS = {"computed": 0, "resumed": 0}
"""Items computed and items read back from a run directory by this process (diagnostics)."""


def digest(*parts: Any) -> str:
    """sha256 (hex) of JSON-able parts (dataclasses, arrays and tensors included)."""
    from challenge.results import to_jsonable

    h = hashlib.sha256()
    for p in parts:
        if hasattr(p, "numpy") and hasattr(p, "cpu"):  # a torch tensor
            p = p.cpu().numpy()
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype}{a.shape}".encode() + a.tobytes())
        else:
            h.update(json.dumps(to_jsonable(p), sort_keys=True, default=str).encode())
    return h.hexdigest()


@contextmanager
def resumable(cfg: DistributedConfig | None, *inputs: Any) -> Iterator[Path | None]:
    """Within this block, :func:`map_items` writes every finished item under
    ``<run_dir>/<digest(inputs)>/`` and reads back the items a previous, interrupted run of the
    same inputs wrote. The directory is removed when the block completes (unless
    ``keep_batches``) and kept when it raises. Nested blocks use the outermost one's directory.
    Yields the directory (None when ``cfg`` runs in this process: nothing is written)."""
    outer = _STORE.get()
    if cfg is None or not cfg.enabled or outer is not None:
        yield outer.path if outer is not None else None
        return
    from challenge.models import cache_root

    root = cfg.run_dir if cfg.run_dir is not None else cache_root() / "runs"
    store = _Store(Path(root) / digest(challenge.__version__, *inputs)[:20])
    token = _STORE.set(store)
    try:
        yield store.path
    except BaseException:
        log.warning(f"run interrupted; its finished batches stay in {store.path} for a rerun")
        raise
    else:
        if not cfg.keep_batches:
            shutil.rmtree(store.path, ignore_errors=True)
    finally:
        _STORE.reset(token)


def pickled(x: Any) -> bytes:
    """``x`` pickled as Ray sends it (cloudpickle: closures and lambdas too)."""
    try:
        from ray import cloudpickle
    except ImportError:  # pragma: no cover - a store exists only on the Ray path
        return pickle.dumps(x, protocol=4)
    return cloudpickle.dumps(x, protocol=4)


def item_key(fn: Callable, item: Any) -> str:
    """The default key of an item: sha256 of the pickled function reference and item."""
    return hashlib.sha256(pickled((fn, item))).hexdigest()


# ---------------------------------------------------------------------------- the API
def map_items(
    fn: Callable[[T], R],
    items: Sequence[T],
    cfg: DistributedConfig | None = None,
    *,
    key: Callable[[T], str] | None = None,
    desc: str | None = None,
) -> list[R]:
    """``[fn(item) for item in items]``, computed on the workers of ``cfg``.

    ``fn`` must be picklable (a module-level function, or a ``functools.partial`` of one) and
    pure: the result may depend only on the item, never on which worker computes it or when
    (draw random numbers in the driver, or seed them from the item). Results come back in item
    order. A work function gets its model with ``worker_model(spec)`` (once per process). With
    ``cfg`` None or not ``enabled``, or when called inside a worker, the items run here, one
    after the other. Inside :func:`resumable`, each result is written as it arrives and items
    already written are read back (keyed by ``key(item)``, default :func:`item_key`).
    ``desc``: a progress bar over the items.

    Example (the atlas)::

        def cell(c: AtlasCell) -> CellResult:
            lm = worker_model(c.model)
            ...

        with resumable(cfg, "atlas", cells):
            results = map_items(cell, cells, cfg, desc="atlas")
    """
    store = _STORE.get()
    out: list[Any] = [None] * len(items)
    keys: list[str] = []
    todo: dict[int, Any] = {}
    for i, it in enumerate(items):
        if store is not None:
            keys.append(key(it) if key is not None else item_key(fn, it))
            hit, value = store.get(keys[i])
            if hit:
                out[i] = value
                STATS["resumed"] += 1
                continue
        todo[i] = it

    def done(i: int, value: Any) -> None:
        out[i] = value
        STATS["computed"] += 1
        if store is not None:
            store.put(keys[i], value)

    bar = tqdm(total=len(todo), desc=desc, leave=False, disable=desc is None or len(todo) <= 1)
    try:
        if cfg is None or not cfg.enabled or _IN_WORKER:
            for i, it in todo.items():
                done(i, fn(it))
                bar.update()
        elif todo:
            _pool(cfg).map(fn, todo, done, bar)
    finally:
        bar.close()
    return out
