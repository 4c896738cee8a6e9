"""Scale-out on Ray with 2 local workers (1 thread each): a small score and a protocol give the
single-process results bit for bit; an interrupted score resumes from the chunks it wrote; a
worker that dies mid-run is restarted and its items retried. The single-process side runs with
1 torch thread, as each worker does (a multi-threaded reduction may change the last bit of
H(p_0): ``challenge.distributed_engine``)."""

import importlib.util
import os
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from challenge import distributed as D
from challenge.distributed import DistributedConfig, map_items, resumable
from challenge.distributed_engine import DistributedEngine, curves_chunk, distribute
from challenge.errors import ConfigError
from challenge.probes import ProbeConfig
from challenge.protocols import P2Config, run_protocol
from challenge.results import to_jsonable
from challenge.scoring import ClassifierConfig, ScoreConfig, probing, score_points
from challenge.track import Track

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed (pip install -e '.[distributed]'; scripts/setup.sh does)",
)

CFG = ScoreConfig(
    n_points=12,
    probes=ProbeConfig(probes=("radius", "p2"), n_directions=2, bisect_steps=2, p2_steps=3),
    classifier=ClassifierConfig(max_iter=5),
    contexts_per_row=1,
    n_boot=20,
)
MAX_ROWS = 18
"""Rows per engine chunk here: chunks of 6 curves x 3 points (radius and P2 alike), so one
score (reference + submission) is 2 x (2 bisection rounds x 2 + 2 P2) = 12 chunks (a forward
costs about the same at any small size: it streams every weight once)."""
CHUNKS = 12


@contextmanager
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ------------------------------------------------------------ work functions (pickled by value)
def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _exit_once(marker: Path, fn, item):
    """``fn(item)``, but the first call anywhere kills its worker process instead."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # one caller only creates it
    except FileExistsError:
        return fn(item)
    os._exit(1)


def _count_and_fail(calls: Path, fail: Path, x: int) -> int:
    """``x + 1``, recording the call; item 3 raises while ``fail`` exists."""
    (calls / f"{x}-{len(list(calls.iterdir()))}-{os.getpid()}").touch()
    if x == 3 and fail.exists():
        raise ValueError("item 3 failed")
    return x + 1


def _fail_after(count: Path, n: int, fn, item):
    """``fn(item)`` for the first ``n`` calls (counted across workers), then an error (the run
    is interrupted)."""
    k = 0
    while True:  # claim the lowest free call number atomically
        try:
            os.close(os.open(count / str(k), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            k += 1
    if k >= n:
        raise RuntimeError("interrupted")
    return fn(item)


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """2 local Ray workers, started by the first test that uses them."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = DistributedConfig(workers=2, run_dir=tmp_path_factory.mktemp("runs"))
    yield cfg
    D.shutdown()


def small_scores(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """Track engines cut curves into chunks of ``MAX_ROWS`` rows, and every score computes its
    reference and submission features (each a cache file of its own in ``tmp``)."""
    engine, n = Track.engine, iter(range(1000))
    mp.setattr(Track, "engine", lambda self, lm, **kw: engine(self, lm, **kw, max_rows=MAX_ROWS))
    mp.setattr(probing, "features_cache_path", lambda *a, **k: tmp / f"features_{next(n)}.npz")


@pytest.fixture
def small(monkeypatch, tmp_path):
    small_scores(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def points(tiny_track):
    return tiny_track.acts("heldout")[tiny_track.oracle_rows()]


@pytest.fixture(scope="module")
def single(smollm, tiny_track, points, tmp_path_factory):
    """The single-process report (1 thread)."""
    with pytest.MonkeyPatch.context() as mp, one_thread():
        small_scores(mp, tmp_path_factory.mktemp("single"))
        return score_points(tiny_track, smollm, points, CFG, progress=False)


def assert_same_report(a, b) -> None:
    """Same JSON document (but its creation time) and the same arrays, bit for bit."""
    ja, jb = a.to_json(), b.to_json()
    assert ja["provenance"].pop("created") and jb["provenance"].pop("created")
    assert ja == jb
    assert sorted(a.arrays) == sorted(b.arrays)
    for k, v in a.arrays.items():
        assert np.array_equal(b.arrays[k], v, equal_nan=True), k


# ---------------------------------------------------------------------------------- tests
def test_config_checks_and_the_in_process_default(smollm, tiny_track):
    assert not DistributedConfig().enabled and DistributedConfig(address="auto").enabled
    for kw, field in [
        ({"workers": -1}, "workers"),
        ({"cpus_per_worker": 0}, "cpus_per_worker"),
        ({"max_retries": -1}, "max_retries"),
        ({"address": ""}, "address"),
        ({"gpus_per_worker": -1.0}, "gpus_per_worker"),
    ]:
        with pytest.raises(ConfigError, match=f"field {field}"):
            DistributedConfig(**kw)
    assert to_jsonable(DistributedConfig(workers=2, address="ray://head:10001")) == {
        "workers": 2,
        "address": "ray://head:10001",
        "cpus_per_worker": 1,
        "gpus_per_worker": None,
        "max_retries": 3,
        "run_dir": None,
        "keep_batches": False,
    }
    eng = tiny_track.engine(smollm, progress=False)
    assert distribute(eng, smollm.spec, DistributedConfig()) is eng  # the single process
    assert map_items(_square_and_pid, [1, 2, 3])[2] == (9, os.getpid())
    with resumable(DistributedConfig(), "x") as path:
        assert path is None  # nothing is written in process


@needs_ray
def test_items_run_on_two_workers_and_an_interrupted_run_resumes(dist, tmp_path):
    out = map_items(_square_and_pid, list(range(6)), dist)
    assert [v for v, _ in out] == [x * x for x in range(6)]
    assert len({p for _, p in out}) == 2 and os.getpid() not in {p for _, p in out}
    assert all(w["threads"] == 1 and w["device"] == "cpu" for w in D.workers_info(dist))

    calls, fail = tmp_path / "calls", tmp_path / "fail"
    calls.mkdir()
    fail.touch()
    fn = partial(_count_and_fail, calls, fail)
    with pytest.raises(ValueError, match="item 3 failed"):
        with resumable(dist, "resume-test", str(tmp_path)) as run:
            map_items(fn, list(range(6)), dist)
    assert len(list(run.glob("*.pkl"))) == 5  # every other item was written
    fail.unlink()
    with resumable(dist, "resume-test", str(tmp_path)) as again:
        assert again == run
        assert map_items(fn, list(range(6)), dist) == [1, 2, 3, 4, 5, 6]
    counts = [sum(c.name.startswith(f"{x}-") for c in calls.iterdir()) for x in range(6)]
    assert counts == [1, 1, 1, 2, 1, 1]  # only the failed item ran again
    assert not run.exists()  # removed once the run completed


@needs_ray
def test_an_interrupted_score_resumes_from_its_written_chunks(
    dist, smollm, tiny_track, points, single, small, monkeypatch, tmp_path
):
    count = tmp_path / "count"
    count.mkdir()
    stop = staticmethod(partial(_fail_after, count, 3, curves_chunk))
    monkeypatch.setattr(DistributedEngine, "chunk_fn", stop)
    with pytest.raises(RuntimeError, match="interrupted"):
        score_points(tiny_track, smollm, points, CFG, progress=False, distributed=dist)
    assert len(list(dist.run_dir.glob("*/*.pkl"))) == 3  # bisection round 1 and 1 chunk of 2
    monkeypatch.setattr(DistributedEngine, "chunk_fn", staticmethod(curves_chunk))
    before = dict(D.STATS)
    again = score_points(tiny_track, smollm, points, CFG, progress=False, distributed=dist)
    assert D.STATS["resumed"] - before["resumed"] == 3
    assert D.STATS["computed"] - before["computed"] == CHUNKS - 3
    assert_same_report(again, single)
    assert not any(dist.run_dir.iterdir())  # the completed run left nothing behind


@needs_ray
def test_a_protocol_on_two_workers_is_the_single_process_one(
    dist, smollm, tiny_track, small, tmp_path
):
    cfg = P2Config(n_pairs=6, n_steps=6)  # 2 calls of 6 curves in chunks of 3
    with one_thread():
        single = run_protocol(tiny_track, smollm, cfg, out=tmp_path / "single")
    two = run_protocol(tiny_track, smollm, cfg, out=tmp_path / "two", distributed=dist)
    assert_same_report(two, single)  # every curve (L2, KL, JS, CE, top-1) and feature


@needs_ray
def test_a_small_score_on_two_workers_is_the_single_process_score(
    dist, smollm, tiny_track, points, single, small
):
    before = D.STATS["computed"]
    two = score_points(tiny_track, smollm, points, CFG, progress=False, distributed=dist)
    assert D.STATS["computed"] - before == CHUNKS  # every chunk computed by a worker
    assert_same_report(two, single)


@needs_ray
def test_a_worker_killed_mid_run_is_restarted_and_its_items_retried(dist, tmp_path):
    """A worker dies on its first item; Ray restarts it and runs its items again (this test runs
    last: the restarted worker starts cold). The engine's chunks are items like these."""
    died = tmp_path / "died"
    out = map_items(partial(_exit_once, died, _square_and_pid), list(range(6)), dist)
    assert died.exists()
    assert [v for v, _ in out] == [x * x for x in range(6)]
    assert len({p for _, p in out}) == 2  # the restarted worker took its items back
