"""Scale-out benchmark: Ray workers vs ``torch.distributed`` ranks (start-up, per-batch
overhead) and the speed-up of a real score on Ray workers over one process, all measured in
this one run, with the cost model's prediction beside it.

    python benchmarks/bench_distributed.py [--track smollm2-135m-l1] [--workers 2]
                                           [--points 288] [--tiny 20] [--out runs/bench]

1. ``torch.distributed``: ``torchrun --standalone --nproc-per-node W`` of this script
   (``--torch-child``): launch to process group (gloo, or nccl on GPUs) up, model loaded on
   every rank; per batch, a tiny curves batch with and without ``all_gather_object`` of its
   result (what SPMD ranks need to share results).
2. Ray: ``ray.init`` of a local cluster, workers (actors) up, model loaded in each; per batch,
   the same tiny batch through ``DistributedEngine.curves`` vs the local engine, and an empty
   round trip.
3. A score on the real track (default scorer config, ``--points`` slots, reference and
   submission probes both computed): one process with ``--cpus-per-worker`` threads (and, with
   ``--also-threads N``, one with N threads) vs ``--workers`` Ray workers; the reports must be
   identical.
4. Cost model: tail rows (points x (bisection rounds x (directions + 1) + P2 steps)) and prefix
   positions -> FLOPs (``bench_engine.tail_flops_per_row``) -> achieved GFLOP/s per device.

Timings are minima over ``--tiny`` repeats for the per-batch figures; the machine's load average
is printed with them (shared machines: see docs/benchmarks.md). On a GPU machine the single
process and every worker run on CUDA (one GPU per worker).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))
from bench_engine import tail_flops_per_row  # noqa: E402


def prefix_flops_per_position(cfg, start: int) -> float:
    """Multiply-adds x 2 of one prefix position through blocks[start:] (no unembedding;
    attention over ~10 positions ignored)."""
    d, H, dh, dm = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    G = cfg.n_key_value_heads or H
    mats = 3 if cfg.gated_mlp else 2
    return 2.0 * (cfg.n_layers - start) * (d * (H + 2 * G) * dh + H * dh * d + mats * d * dm)


def tiny_batch(track):
    """One context, a path of 2 points: the smallest engine call."""
    a = track.acts("context")[:1]
    return track.tokens("context")[:1], torch.stack([a, a * 1.01], dim=1)


def _noop(x):
    return x


def _load(spec):
    from challenge.distributed import worker_model

    worker_model(spec)
    return os.getpid()


# ------------------------------------------------------------------ torch.distributed child
def torch_child(args) -> None:
    import torch.distributed as dist

    t_start = float(os.environ["BENCH_T0"])
    from challenge.models import load_model
    from challenge.track import resolve_track

    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    t_init = time.time()
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    torch.set_num_threads(args.cpus_per_worker)
    track = resolve_track(args.track, build=False)
    lm = load_model(track.spec.model, device=device)
    eng = track.engine(lm, progress=False)
    dist.barrier()
    t_ready = time.time()
    tok, paths = tiny_batch(track)
    eng.curves(tok, paths)  # warm-up (prefix cache, folded weights)
    compute, gathered, empty = [], [], []
    for _ in range(args.tiny):
        dist.barrier()
        t0 = time.perf_counter()
        c = eng.curves(tok, paths)
        compute.append(time.perf_counter() - t0)
        dist.barrier()
        t0 = time.perf_counter()
        c = eng.curves(tok, paths)
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, c.arrays())
        gathered.append(time.perf_counter() - t0)
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_gather_object(out, 0)
        empty.append(time.perf_counter() - t0)
    times = [None] * dist.get_world_size()
    dist.all_gather_object(times, (t_init - t_start, t_ready - t_start))
    if rank == 0:
        Path(args.child_out).write_text(
            json.dumps(
                {
                    "init_s": max(t[0] for t in times),
                    "ready_s": max(t[1] for t in times),
                    "tiny_compute_s": min(compute),
                    "tiny_with_gather_s": min(gathered),
                    "empty_round_trip_s": min(empty),
                    "empty_round_trip_median_s": float(np.median(empty)),
                }
            )
        )
    dist.destroy_process_group()


def bench_torch_distributed(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={args.workers}",
            __file__,
            "--torch-child",
            f"--child-out={out}",
            f"--track={args.track}",
            f"--tiny={args.tiny}",
            f"--cpus-per-worker={args.cpus_per_worker}",
        ]
        t0 = time.time()
        env = dict(os.environ, OMP_NUM_THREADS=str(args.cpus_per_worker), BENCH_T0=repr(t0))
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        res = json.loads(out.read_text())
        res["wall_s"] = time.time() - t0
        return res


# ------------------------------------------------------------------ Ray
def bench_ray(args, lm, track) -> tuple[dict, object]:
    from challenge import distributed as D
    from challenge.distributed_engine import distribute

    cfg = D.DistributedConfig(
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
    )
    t0 = time.perf_counter()
    pool = D._pool(cfg)  # ray.init + actors created (asynchronously)
    t_init = time.perf_counter()
    D.workers_info(cfg)  # every worker process up (imports done)
    t_up = time.perf_counter()
    pids = D.map_items(_load, [lm.spec] * len(pool.actors), cfg)  # item i -> worker i
    t_model = time.perf_counter()
    assert len(set(pids)) == len(pool.actors)
    tok, paths = tiny_batch(track)
    local = track.engine(lm, progress=False)
    remote = distribute(track.engine(lm, progress=False), lm.spec, cfg)
    local.curves(tok, paths)
    remote.curves(tok, paths)  # warm-up
    t_local, t_remote, t_empty = [], [], []
    for _ in range(args.tiny):
        s = time.perf_counter()
        local.curves(tok, paths)
        t_local.append(time.perf_counter() - s)
        s = time.perf_counter()
        remote.curves(tok, paths)
        t_remote.append(time.perf_counter() - s)
        s = time.perf_counter()
        D.map_items(_noop, [0], cfg)
        t_empty.append(time.perf_counter() - s)
    return {
        "init_s": t_init - t0,
        "workers_up_s": t_up - t_init,
        "model_load_s": t_model - t_up,
        "ready_s": t_model - t0,
        "tiny_compute_s": min(t_local),
        "tiny_remote_s": min(t_remote),
        "empty_round_trip_s": min(t_empty),
        "empty_round_trip_median_s": float(np.median(t_empty)),
    }, cfg


# ------------------------------------------------------------------ the score
def timed_score(track, lm, pts, cfg, threads: int, dist=None) -> tuple[float, object]:
    from challenge.scoring import recording as scorer

    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()  # every feature computed, none read from the cache
        rep = scorer.score_points(
            track, lm, pts, cfg, progress=False, distributed=dist, cache=False
        )
        return time.perf_counter() - t0, rep
    finally:
        torch.set_num_threads(n)


def same_report(a, b) -> bool:
    ja, jb = a.to_json(), b.to_json()
    ja["provenance"].pop("created")
    jb["provenance"].pop("created")
    return (
        ja == jb
        and sorted(a.arrays) == sorted(b.arrays)
        and all(np.array_equal(a.arrays[k], b.arrays[k], equal_nan=True) for k in a.arrays)
    )


def cost_model(lm, track, cfg, n: int) -> dict:
    """Rows and FLOPs of one score (reference + submission) under the default probes."""
    from challenge.hooks import parse_resid

    start = parse_resid(track.spec.write_hook, lm.cfg.n_layers)
    T = track.tokens("context").shape[1]
    p = cfg.probes
    rows_per_point = p.bisect_steps * (p.n_directions + 1) + p.p2_steps
    tail_rows = 2 * n * rows_per_point
    prefix_positions = 2 * 2 * n * (T - 1)  # radius and P2 chunk the contexts differently
    flops = tail_rows * tail_flops_per_row(lm.cfg, start, T - 1) + prefix_positions * (
        prefix_flops_per_position(lm.cfg, start)
    )
    return {
        "tail_rows_per_point": rows_per_point,
        "tail_rows": tail_rows,
        "prefix_positions": prefix_positions,
        "tail_flops_per_row": tail_flops_per_row(lm.cfg, start, T - 1),
        "flops": flops,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus-per-worker", type=int, default=1)
    ap.add_argument(
        "--gpus-per-worker", type=float, default=None, help="default: 1 on a GPU machine"
    )
    ap.add_argument("--points", type=int, default=288, help="slots of the timed score")
    ap.add_argument("--tiny", type=int, default=20, help="repeats of the per-batch figures")
    ap.add_argument("--also-threads", type=int, default=0, help="also time one process, N threads")
    ap.add_argument("--skip-torch", action="store_true", help="skip torch.distributed")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    ap.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_child:
        return torch_child(args)

    from challenge import distributed as D
    from challenge.models import load_model
    from challenge.scoring import ScoreConfig
    from challenge.track import resolve_track

    torch.set_num_threads(args.cpus_per_worker)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res: dict = {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker}
    res["device"] = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{os.cpu_count()}"
    res["load_before"] = os.getloadavg()
    print(
        f"{args.workers} workers x {args.cpus_per_worker} threads on {res['device']}, "
        f"load average {res['load_before'][0]:.1f}"
    )

    if not args.skip_torch:
        res["torch_distributed"] = td = bench_torch_distributed(args)
        print(
            f"torch.distributed: ready in {td['ready_s']:.1f} s (process group up "
            f"{td['init_s']:.1f} s after launch); tiny batch {1e3 * td['tiny_compute_s']:.0f} ms "
            f"+ all_gather {1e3 * (td['tiny_with_gather_s'] - td['tiny_compute_s']):.1f} ms; "
            f"empty collective {1e3 * td['empty_round_trip_s']:.2f} ms"
        )

    track = resolve_track(args.track, build=False)
    lm = load_model(track.spec.model)
    ray_res, dcfg = bench_ray(args, lm, track)
    res["ray"] = rr = ray_res
    print(
        f"Ray:               ready in {rr['ready_s']:.1f} s (init {rr['init_s']:.1f}, workers up "
        f"{rr['workers_up_s']:.1f}, model {rr['model_load_s']:.1f}); tiny batch "
        f"{1e3 * rr['tiny_compute_s']:.0f} ms here, {1e3 * rr['tiny_remote_s']:.0f} ms on a worker "
        f"(+{1e3 * (rr['tiny_remote_s'] - rr['tiny_compute_s']):.1f} ms); empty round trip "
        f"{1e3 * rr['empty_round_trip_s']:.2f} ms"
    )

    cfg = ScoreConfig(n_points=args.points)
    pts = track.acts("heldout")[track.oracle_rows()]
    cm = res["cost_model"] = cost_model(lm, track, cfg, args.points)
    c0 = time.process_time()
    t1, single = timed_score(track, lm, pts, cfg, args.cpus_per_worker)
    cpu1 = time.process_time() - c0
    D.STATS.update(computed=0, resumed=0)
    w0, c0 = D.workers_info(dcfg), time.process_time()
    tw, dist_rep = timed_score(track, lm, pts, cfg, args.cpus_per_worker, dcfg)
    cpu_driver = time.process_time() - c0
    cpu_w = [b["cpu_s"] - a["cpu_s"] for a, b in zip(w0, D.workers_info(dcfg), strict=True)]
    res["score"] = sc = {
        "points": args.points,
        "single_s": t1,
        "workers_s": tw,
        "speedup": t1 / tw,
        "speedup_with_startup": t1 / (tw + rr["ready_s"]),
        "chunks": D.STATS["computed"],
        "identical": same_report(single, dist_rep),
        "single_gflops": cm["flops"] / t1 / 1e9,
        "per_worker_gflops": cm["flops"] / tw / 1e9 / args.workers,
        # CPU seconds: what the machine's other load does not change (much)
        "single_cpu_s": cpu1,
        "workers_cpu_s": cpu_w,
        "driver_cpu_s": cpu_driver,
        "single_gflops_per_cpu_s": cm["flops"] / cpu1 / 1e9,
        "idle_speedup_bound": cpu1 / (max(cpu_w) + cpu_driver),
    }
    print(
        f"score, {args.points} points ({cm['tail_rows']} tail rows, {cm['flops'] / 1e12:.1f} TFLOP):"
        f" one process {t1:.1f} s ({sc['single_gflops']:.0f} GFLOP/s), {args.workers} workers "
        f"{tw:.1f} s ({sc['per_worker_gflops']:.0f} GFLOP/s each, {sc['chunks']} chunks): "
        f"{sc['speedup']:.2f}x ({sc['speedup_with_startup']:.2f}x counting start-up); "
        f"identical: {sc['identical']}"
    )
    print(
        f"CPU seconds: one process {cpu1:.1f} ({sc['single_gflops_per_cpu_s']:.0f} GFLOP per "
        f"CPU-second); workers {', '.join(f'{c:.1f}' for c in cpu_w)}, driver {cpu_driver:.1f}: "
        f"on an idle machine the workers would finish {sc['idle_speedup_bound']:.2f}x faster"
    )
    if args.also_threads:
        tn, rep_n = timed_score(track, lm, pts, cfg, args.also_threads)
        sc["single_threads"] = {
            "threads": args.also_threads,
            "seconds": tn,
            "workers_speedup": tn / tw,
            "identical": same_report(single, rep_n),
        }
        print(
            f"one process, {args.also_threads} threads: {tn:.1f} s; workers vs it: "
            f"{tn / tw:.2f}x; identical to 1 thread: {sc['single_threads']['identical']}"
        )
    res["load_after"] = os.getloadavg()
    D.shutdown()
    print(f"load average after: {res['load_after'][0]:.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_distributed.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
