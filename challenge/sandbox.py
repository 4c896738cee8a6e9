"""Verified generators: a participant's generator file re-run by the organiser in a bubblewrap
sandbox that sees only the public split and the track's SAE.

A generator file defines one class (or ``--class-name``) with ``fit(track, lm)`` and
``sample(n, *, seed)`` (``challenge.submission.Generator``, without the model: ``lm`` is
``None``). ``track`` is a :class:`SandboxTrack`: ``spec``, ``meta`` (sizes, units, d_model),
``acts("public")``, ``tokens("public")``, ``d_model``, ``units`` and ``sae()`` (the track's SAE,
as ``challenge.sae.SAE``); any other split raises.

:func:`run_sandboxed` copies the public split, the SAE and the file into a fresh work folder and
runs ``challenge/sandbox_runner.py`` under ``bwrap`` (Debian's bubblewrap; ``scripts/setup.sh``
installs it) with: the Python install, the venv and the ``challenge`` / ``baselines`` sources
read-only (model-weight packages inside the venv hidden under empty tmpfs), the work folder
read-only, one output folder writable, ``/tmp`` a tmpfs, nothing else of the file system
(no model cache, no track cache, no repository, no home); new network, PID, IPC and UTS
namespaces (no network at all), every capability dropped, ``--die-with-parent``,
``--new-session``, a cleared environment; and limits: address space (``RLIMIT_AS``), CPU
seconds (``RLIMIT_CPU``), output file size (``RLIMIT_FSIZE``) and a wall-clock timeout. What
holds on this machine, measured, is in docs/integrity.md.

:func:`verify_generator` then validates the output as any submission (copy check included),
scores it and records it with ``access`` = synthetic, verified by the sandbox.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from challenge.errors import ConfigError, SubmissionError
from challenge.track import TrackHalves, TrackLike

WORK, OUT, LIB = "/sandbox/work", "/sandbox/out", "/sandbox/lib"
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz")
"""Files of these kinds over ``WEIGHT_MIN_BYTES`` in the venv hide their package folder."""
WEIGHT_MIN_BYTES = 8 << 20
ETC_FILES = ("ld.so.cache", "ld.so.conf", "nsswitch.conf", "passwd", "group", "localtime")
"""The only files of /etc the sandbox sees (dynamic linking, user names)."""


@dataclass
class SandboxLimits:
    """Resource limits of a sandboxed run."""

    wall_seconds: float = 600.0
    """wall-clock time before the run is killed"""
    cpu_seconds: int = 1200
    """CPU time (all threads) before the kernel kills the process (``RLIMIT_CPU``)"""
    memory_gb: float = 8.0
    """address space of the process (``RLIMIT_AS``; torch needs ~2 GB of it to import)"""
    output_mb: int = 512
    """largest file the generator may write (``RLIMIT_FSIZE``)"""
    threads: int = 1
    """``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` inside"""

    def __post_init__(self) -> None:
        for name in ("wall_seconds", "cpu_seconds", "memory_gb", "output_mb", "threads"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0, got {getattr(self, name)!r}", field=name)


class SandboxTrack(TrackHalves):
    """The track as a sandboxed generator sees it (built inside the sandbox from the work
    folder): the public split and the SAE only."""

    def __init__(self, work: str | Path = WORK):
        from safetensors.torch import load_file

        from challenge.track import TrackSpec

        self._work = Path(work)
        doc = json.loads((self._work / "track.json").read_text())
        self.spec, self.meta, self.path = TrackSpec.from_dict(doc["spec"]), doc["meta"], None
        self._public = load_file(str(self._work / "public.safetensors"))

    def acts(self, split: str) -> torch.Tensor:
        self._check(split)
        return self._public["activation"]

    def tokens(self, split: str) -> torch.Tensor:
        self._check(split)
        return self._public["tokens"]

    @staticmethod
    def _check(split: str) -> None:
        if split != "public":
            raise PermissionError(f"the sandbox holds only the public split, not {split!r}")

    @property
    def d_model(self) -> int:
        return int(self._public["activation"].shape[1])

    @property
    def units(self) -> dict[str, float]:
        return self.meta["units"]

    @property
    def splits(self) -> dict[str, Any]:
        return {
            "public": {"tokens": self._public["tokens"], "activation": self._public["activation"]}
        }

    @property
    def data_sha256(self) -> str | None:
        return None  # the sandbox holds one split: not the track's content

    def sae(self):
        from challenge.sae import load_sae

        if not (self._work / "sae").is_dir():
            raise FileNotFoundError("this verification was run without the track's SAE")
        return load_sae(self._work / "sae")


def bwrap_path() -> str:
    """The ``bwrap`` executable, or ``ConfigError`` saying how to install it."""
    path = shutil.which("bwrap")
    if path is None:
        raise ConfigError(
            "bubblewrap (bwrap) is not installed: `apt-get install -y bubblewrap` "
            "(scripts/setup.sh does it)",
            field="sandbox",
        )
    return path


def _weight_dirs(site_packages: list[Path]) -> list[Path]:
    """Top-level package folders of the venv that hold model weights (hidden in the sandbox)."""
    out = []
    for sp in site_packages:
        for top in sorted(sp.iterdir()) if sp.is_dir() else []:
            if not top.is_dir() or top.name.endswith((".dist-info", ".egg-info")):
                continue
            for root, _, files in os.walk(top):
                if any(
                    f.endswith(WEIGHT_SUFFIXES)
                    and os.path.getsize(os.path.join(root, f)) >= WEIGHT_MIN_BYTES
                    for f in files
                    if os.path.isfile(os.path.join(root, f))
                ):
                    out.append(top)
                    break
    return out


def _mounts(work: Path, out: Path) -> list[str]:
    """bwrap's mount arguments: system and Python read-only, weights hidden, work + out."""
    import site

    import challenge

    # /tmp first: the binds below (a venv or a clone under /tmp) land on top of it
    args: list[str] = ["--tmpfs", "/tmp"]
    for d in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        p = Path(d)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), d]
        elif p.is_dir():
            args += ["--ro-bind", d, d]
    for f in ETC_FILES:
        if Path("/etc", f).exists():
            args += ["--ro-bind", f"/etc/{f}", f"/etc/{f}"]
    for prefix in dict.fromkeys([sys.base_prefix, sys.prefix]):
        if not prefix.startswith("/usr"):
            args += ["--ro-bind", prefix, prefix]
    sps = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()]
    for d in _weight_dirs(sps):
        args += ["--tmpfs", str(d)]
    repo = Path(challenge.__file__).resolve().parent.parent
    for pkg in ("challenge", "baselines"):
        if (repo / pkg).is_dir():
            args += ["--ro-bind", str(repo / pkg), f"{LIB}/{pkg}"]
    return args + [
        "--ro-bind", str(work), WORK,
        "--bind", str(out), OUT,
        "--proc", "/proc",
        "--dev", "/dev",
        "--chdir", WORK,
    ]  # fmt: skip


def _limits(lim: SandboxLimits):
    def apply() -> None:
        mem = int(lim.memory_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_seconds, lim.cpu_seconds))
        size = lim.output_mb << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def sandbox_command(work: Path, out: Path, lim: SandboxLimits, *cmd: str) -> list[str]:
    """The full ``bwrap ... cmd`` command line of a sandboxed run."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "PYTHONPATH": LIB,
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": str(lim.threads),
        "MKL_NUM_THREADS": str(lim.threads),
        "HF_HUB_OFFLINE": "1",
        "MPLCONFIGDIR": "/tmp",
    }
    envargs = [a for k, v in env.items() for a in ("--setenv", k, v)]
    return [
        bwrap_path(),
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv",
        *envargs, *_mounts(work, out), *cmd,
    ]  # fmt: skip


@dataclass
class SandboxRun:
    """What a sandboxed run produced."""

    acts: torch.Tensor
    description: str
    seconds: float


def prepare_work(track: TrackLike, generator_file: Path, work: Path, sae: Any = None) -> None:
    """The sandbox's inputs: ``generator.py``, ``track.json`` (spec, sizes, units, d_model),
    ``public.safetensors`` (activations and tokens of the public split) and ``sae/``."""
    from safetensors.torch import save_file

    shutil.copyfile(generator_file, work / "generator.py")
    meta = {
        "sizes": {"public": len(track.acts("public")), "heldout": track.heldout_size},
        "units": track.units,
        "d_model": track.d_model,
    }
    (work / "track.json").write_text(json.dumps({"spec": track.spec.to_dict(), "meta": meta}))
    save_file(
        {
            "activation": track.acts("public").contiguous(),
            "tokens": track.tokens("public").contiguous(),
        },
        str(work / "public.safetensors"),
    )
    if sae is not None:
        from challenge.sae import save_sae

        save_sae(sae, work / "sae")


def run_sandboxed(
    generator_file: str | Path,
    track: TrackLike,
    n: int,
    *,
    seed: int = 0,
    sae: Any = None,
    class_name: str | None = None,
    limits: SandboxLimits | None = None,
) -> SandboxRun:
    """Run ``generator_file``'s generator in the sandbox (fit on the public split, sample ``n``
    rows with ``seed``); ``SubmissionError`` naming the file when it fails, times out or breaks
    a limit (its last error line is quoted)."""
    import time

    lim = limits or SandboxLimits()
    src = Path(generator_file)
    if not src.is_file():
        raise SubmissionError("generator file missing", file=str(src))
    runner = Path(__file__).with_name("sandbox_runner.py")
    with tempfile.TemporaryDirectory(prefix="plateau-sandbox-") as tmp:
        work, out = Path(tmp, "work"), Path(tmp, "out")
        work.mkdir()
        out.mkdir()
        prepare_work(track, src, work, sae)
        job = {"n": int(n), "seed": int(seed), "class_name": class_name}
        (work / "job.json").write_text(json.dumps(job))
        cmd = sandbox_command(
            work, out, lim, sys.executable, "-s", "-B", f"{LIB}/challenge/{runner.name}"
        )
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=lim.wall_seconds,
                preexec_fn=_limits(lim),
            )
        except subprocess.TimeoutExpired:
            raise SubmissionError(
                f"generator ran past the {lim.wall_seconds:g} s limit in the sandbox", file=str(src)
            ) from None
        seconds = time.perf_counter() - t0
        err = out / "error.txt"
        if proc.returncode != 0 or not (out / "activations.safetensors").is_file():
            if err.is_file():
                why = err.read_text(errors="replace")[:400]
            else:
                tail = (proc.stderr or "").strip().splitlines()
                why = (tail[-1] if tail else f"exit status {proc.returncode}")[:400]
                sig = -proc.returncode if proc.returncode < 0 else proc.returncode - 128
                if sig > 0:  # bwrap passes a killed child on as 128 + signal
                    why = f"killed by signal {sig} (the CPU or memory limit?): {why}"
            raise SubmissionError(f"generator failed in the sandbox: {why}", file=str(src))
        from challenge.submission import MAX_ACTS_BYTES, load_acts, read_regular

        path = str(out / "activations.safetensors")
        acts = load_acts(read_regular(path, MAX_ACTS_BYTES, "sandbox output"), path)
        info = json.loads((out / "result.json").read_text())
        return SandboxRun(
            acts=acts, description=str(info.get("description", ""))[:2000], seconds=seconds
        )


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify_generator(
    generator_file: str | Path,
    track: TrackLike,
    lm: Any,
    *,
    name: str,
    authors: list[str],
    seed: int = 0,
    sae: Any = None,
    class_name: str | None = None,
    limits: SandboxLimits | None = None,
    score_cfg: Any = None,
    board: Path = Path("leaderboard"),
    submissions: Path = Path("submissions"),
    replace: bool = False,
) -> Any:
    """Run the generator in the sandbox, write its submission folder
    ``<submissions>/<track id>/<name>/``, validate, score and record it on the board as a
    synthetic entry verified by the sandbox (``challenge.scoring.recording``)."""
    from challenge.access import entry_access
    from challenge.scoring.recording import record
    from challenge.submission import check_name, write_submission

    check_name(name)
    existing = Path(board) / track.spec.track_id / f"{name}.json"
    if os.path.lexists(existing) and not replace:
        raise SubmissionError(
            f"{name!r} is already on the board ({existing}); pass --replace to replace it",
            field="name",
        )
    digest = file_sha256(generator_file)
    run = run_sandboxed(
        generator_file,
        track,
        track.required_n,
        seed=seed,
        sae=sae,
        class_name=class_name,
        limits=limits,
    )
    if not isinstance(run.acts, torch.Tensor) or run.acts.dim() != 2:
        raise SubmissionError(
            "the generator's sample is not a [N, d_model] tensor", file=str(generator_file)
        )
    meta = {
        "name": name,
        "authors": authors,
        "track_id": track.spec.track_id,
        "track_version": track.spec.version,
        "generator": run.description or f"sandboxed generator {Path(generator_file).name}",
        "code": f"{Path(generator_file).name} (sha256 {digest[:16]}), verified in the sandbox",
        "seed": seed,
        "uses": ["public_activations", "sae"] if sae is not None else ["public_activations"],
    }
    folder = write_submission(Path(submissions) / track.spec.track_id / name, meta, run.acts)
    access = entry_access(
        "synthetic", "sandbox", ["public", "sae"] if sae is not None else ["public"], digest
    )
    return record(folder, track, lm, score_cfg, board, access=access, replace=replace)
