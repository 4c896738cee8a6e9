"""Verified generators: a participant's generator file re-run by the organiser in a bubblewrap
sandbox that sees only the public split and the track's SAE (the rows tier) or only the track's
statistics artifact and SAE (the statistics tier).

A generator file defines one class (or ``--class-name``) with ``fit(track, lm)`` and
``sample(n, *, seed)`` (``challenge.submission.Generator``, without the model: ``lm`` is
``None``). ``track`` is a :class:`SandboxTrack`: ``spec``, ``meta`` (sizes, units, d_model),
``acts("public")``, ``tokens("public")``, ``d_model``, ``units`` and ``sae()`` (the track's SAE,
as ``challenge.sae.SAE``); any other split raises.

The statistics tier (``tier="statistics"``): the file's class has ``fit(stats, sae)``
(``baselines.statistics_generators.StatisticsGenerator``); the work folder holds the track's
statistics artifact (``statistics/``, verified against its manifest before it is copied, and
refused when it is another track's or was built with another SAE) and the SAE it was built with
(``sae/``), and no split at all: the runner calls ``fit(load_statistics(...), load_sae(...))``.

:func:`run_sandboxed` copies the public split, the SAE and the file into a fresh work folder and
runs ``challenge/sandbox_runner.py`` under ``bwrap`` (Debian's bubblewrap; ``scripts/setup.sh``
installs it) with: the Python install, the venv and the ``challenge`` / ``baselines`` sources
read-only (model-weight packages inside the venv hidden under empty read-only tmpfs), the work
folder read-only, the root read-only, and the only writable places size-limited tmpfs that live
and die with the sandbox (``/sandbox/out``, ``/tmp``, ``/dev/shm``: nothing the generator writes
lands on the host's disk); nothing else of the file system (no model cache, no track cache, no
repository, no home); new network, PID, IPC and UTS namespaces (no network at all), every
capability dropped, ``--die-with-parent``, ``--new-session``, a cleared environment; and limits:
address space (``RLIMIT_AS``), CPU seconds (``RLIMIT_CPU``), file size (``RLIMIT_FSIZE``), the
tmpfs sizes, stdout / stderr volume and a wall-clock timeout (:class:`SandboxLimits`).

Everything the sandbox hands back is untrusted input: the runner sends the sample and a small
JSON result through two pipes (never a path the host opens), which the host reads with a byte
cap each (the run is stopped past it), parses strictly and checks (float32, the track's
[N, d_model], finite) before anything is written; stdout and stderr are drained keeping only
their last ``LOG_TAIL_BYTES``. What holds on this machine, measured, is in docs/integrity.md.

:func:`verify_generator` then validates the output as any submission (copy check included) in
a private staging folder, scores it and records it with ``access`` = synthetic (rows tier) or
statistics (statistics tier), verified by the sandbox; only then is the submission folder
renamed into place (a failure leaves the submissions and the board as they were).
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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from challenge import checks
from challenge.errors import ConfigError, SubmissionError, TrackIntegrityError
from challenge.track import TrackHalves, TrackLike

WORK, OUT, LIB = "/sandbox/work", "/sandbox/out", "/sandbox/lib"
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz")
"""Files of these kinds over ``WEIGHT_MIN_BYTES`` in the venv hide their package folder."""
WEIGHT_MIN_BYTES = 8 << 20
ETC_FILES = ("ld.so.cache", "ld.so.conf", "nsswitch.conf", "passwd", "group", "localtime")
"""The only files of /etc the sandbox sees (dynamic linking, user names)."""
RESULT_BYTES = 64 * 1024
"""Largest result document (``{"description": ...}`` or ``{"error": ...}``) read back."""
LOG_TAIL_BYTES = 64 * 1024
"""Bytes of the end of stdout and of stderr kept (each); the rest is read and dropped."""
DESCRIPTION_CHARS = 2000
"""Longest description kept (``challenge.submission.TEXT_LIMITS["generator"]``)."""
TIERS = ("rows", "statistics")
"""rows: ``fit(track, None)`` on the public split (and the SAE); statistics: ``fit(stats, sae)``
on the statistics artifact and its SAE, no split in the sandbox."""


@dataclass
class SandboxLimits:
    """Resource limits of a sandboxed run (each must be > 0)."""

    wall_seconds: float = 600.0
    """wall-clock time before the run is killed"""
    cpu_seconds: int = 1200
    """CPU time (all threads) before the kernel kills the process (``RLIMIT_CPU``)"""
    memory_gb: float = 8.0
    """address space of the process (``RLIMIT_AS``; torch needs ~2 GB of it to import)"""
    output_mb: int = 512
    """largest single file the generator may write anywhere (``RLIMIT_FSIZE``)"""
    out_mb: int = 512
    """size of ``/sandbox/out``, a tmpfs: all its files together (writing past it fails with
    ENOSPC). It lives in the sandbox only: nothing written there reaches the host's disk"""
    tmp_mb: int = 256
    """size of ``/tmp`` and of ``/dev/shm``, each a tmpfs (ENOSPC past it); the root and
    ``/dev`` are read-only, so these and ``out_mb`` bound all the generator can store
    (host shared memory, not counted by ``RLIMIT_AS``)"""
    log_mb: int = 16
    """bytes of stdout, and of stderr, the run may write; past it the run is stopped and
    refused (only the last ``LOG_TAIL_BYTES`` of each are kept in memory)"""
    threads: int = 1
    """``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` inside"""

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "output_mb", "out_mb", "tmp_mb", "log_mb", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"must be an integer, got {v!r}", field=name)
        for name in ("wall_seconds", "memory_gb"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError(f"must be a number, got {v!r}", field=name)
        for name in (
            "wall_seconds",
            "cpu_seconds",
            "memory_gb",
            "output_mb",
            "out_mb",
            "tmp_mb",
            "log_mb",
            "threads",
        ):
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
        public = self._work / "public.safetensors"
        if not public.is_file():
            raise PermissionError(
                "this sandbox holds no split (the statistics tier: fit(stats, sae) gets the "
                "statistics artifact and the SAE, never a row)"
            )
        self._public = load_file(str(public))

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


def _mounts(work: Path, lim: SandboxLimits) -> list[str]:
    """bwrap's mount arguments: system and Python read-only, weights hidden, the work folder
    read-only, the writable places size-limited tmpfs, the root read-only."""
    import site

    import challenge

    tmp, out = str(lim.tmp_mb << 20), str(lim.out_mb << 20)
    # /tmp first: the binds below (a venv or a clone under /tmp) land on top of it
    args: list[str] = ["--size", tmp, "--tmpfs", "/tmp"]
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
        args += ["--tmpfs", str(d), "--remount-ro", str(d)]
    repo = Path(challenge.__file__).resolve().parent.parent
    for pkg in ("challenge", "baselines"):
        if (repo / pkg).is_dir():
            args += ["--ro-bind", str(repo / pkg), f"{LIB}/{pkg}"]
    return args + [
        "--ro-bind", str(work), WORK,
        "--size", out, "--tmpfs", OUT,
        "--proc", "/proc",
        "--dev", "/dev", "--size", tmp, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
        "--remount-ro", "/",
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


def sandbox_command(work: Path, lim: SandboxLimits, *cmd: str) -> list[str]:
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
        *envargs, *_mounts(work, lim), *cmd,
    ]  # fmt: skip


@dataclass
class SandboxRun:
    """What a sandboxed run produced (checked: float32 [n, d_model], finite)."""

    acts: torch.Tensor
    description: str
    seconds: float
    stdout: str = ""
    """the last ``LOG_TAIL_BYTES`` of the run's stdout"""
    stderr: str = ""
    """the last ``LOG_TAIL_BYTES`` of the run's stderr"""


class _Drain(threading.Thread):
    """Reads a pipe to its end, holding at most ``keep`` bytes: its first ones (an output) or,
    with ``tail``, its last ones (a log). Past ``limit`` bytes in all, ``over`` is set and
    ``on_over`` is called once (it stops the run); reading goes on, dropping what comes."""

    def __init__(self, fd: int, keep: int, limit: int, *, tail: bool = False, on_over=None):
        super().__init__(daemon=True)
        self.fd, self.keep, self.limit, self.tail, self.on_over = fd, keep, limit, tail, on_over
        self.buf, self.total, self.over = bytearray(), 0, False

    def run(self) -> None:
        try:
            while chunk := os.read(self.fd, 1 << 16):
                self.total += len(chunk)
                if self.tail:
                    self.buf += chunk
                    del self.buf[: max(0, len(self.buf) - self.keep)]
                elif len(self.buf) < self.keep:
                    self.buf += chunk[: self.keep - len(self.buf)]
                if self.total > self.limit and not self.over:
                    self.over = True
                    if self.on_over is not None:
                        self.on_over()
        except OSError:
            pass
        finally:
            os.close(self.fd)

    @property
    def data(self) -> bytes:
        return bytes(self.buf)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _one_line(text: str, limit: int = 400) -> str:
    """``text`` as one printable line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return "".join(c if c.isprintable() else "?" for c in line)[:limit]


def _parse_result(raw: bytes, src: str) -> dict[str, str]:
    """The runner's result document, strictly: a JSON object holding exactly one of
    ``description`` (a string: whitespace folded, cut to ``DESCRIPTION_CHARS``, printable) or
    ``error`` (a string: made one line); anything else is one ``SubmissionError`` line."""
    from challenge.submission import parse_json

    if len(raw) > RESULT_BYTES:
        raise SubmissionError(
            f"the sandbox's result is more than {RESULT_BYTES} bytes", file=src, field="result"
        )
    try:
        doc = parse_json(raw, src)
    except SubmissionError as e:
        raise SubmissionError(
            f"the sandbox's result is {e.problem}", file=src, field="result"
        ) from None
    if not isinstance(doc, dict) or len(doc) != 1 or not set(doc) <= {"description", "error"}:
        raise SubmissionError(
            'the sandbox\'s result must be {"description": str} or {"error": str}',
            file=src,
            field="result",
        )
    key, value = next(iter(doc.items()))
    if not isinstance(value, str):
        raise SubmissionError(
            f"must be a string, got {type(value).__name__}", file=src, field=f"result.{key}"
        )
    if key == "error":
        return {"error": _one_line(value)}
    desc = " ".join(value.split())[:DESCRIPTION_CHARS]
    if not desc.isprintable():
        raise SubmissionError(
            "contains control or unpaired surrogate characters",
            file=src,
            field="result.description",
        )
    return {"description": desc}


def _check_acts(acts: torch.Tensor, n: int, d_model: int, src: str) -> torch.Tensor:
    """``acts`` when it is float32 [n, d_model] and finite, else one ``SubmissionError`` line."""
    if acts.dtype != torch.float32:
        raise SubmissionError(
            f"the sandbox's activations are {acts.dtype}, must be torch.float32",
            file=src,
            field="activations",
        )
    if tuple(acts.shape) != (n, d_model):
        raise SubmissionError(
            f"the sandbox's activations have shape {list(acts.shape)}, not [{n}, {d_model}] "
            "(the track's N and d_model)",
            file=src,
            field="activations",
        )
    finite = torch.isfinite(acts).all(dim=1)
    if not bool(finite.all()):
        raise SubmissionError(
            f"the sandbox's activations have {int((~finite).sum())} rows with NaN or inf",
            file=src,
            field="activations",
        )
    return acts


def _check_tier(tier: str, sae: Any, stats_dir: str | Path | None) -> None:
    """``tier`` is one of :data:`TIERS`; the statistics tier has its artifact and its SAE, the
    rows tier no artifact. One ``ConfigError`` line otherwise."""
    checks.choice(tier, TIERS, "tier")
    if tier == "statistics":
        if sae is None:
            raise ConfigError(
                "the statistics tier needs the SAE its artifact was built with; none was given",
                field="sae",
            )
        if stats_dir is None:
            raise ConfigError(
                "the statistics tier needs the track's statistics artifact; none was given",
                field="statistics",
            )
    elif stats_dir is not None:
        raise ConfigError(
            "a statistics artifact is for the statistics tier only (tier='statistics')",
            field="tier",
        )


def copy_statistics(track: TrackLike, stats_dir: str | Path, dest: Path, sae: Any) -> None:
    """Copy the artifact folder ``stats_dir`` to ``dest`` after checking it: every file against
    its manifest (``verify_statistics``), the artifact of ``track`` (id, version, d_model), built
    with ``sae``; the copy is verified again. ``TrackIntegrityError`` naming the file otherwise."""
    from challenge.statistics.artifact import MANIFEST, META_FILE, verify_statistics
    from challenge.statistics.published import check_artifact_sae

    src = Path(stats_dir)
    manifest = verify_statistics(src)
    where = str(src / MANIFEST)
    names = list(manifest["files"])
    bad = [n for n in names if not isinstance(n, str) or Path(n).name != n or n.startswith(".")]
    if bad:
        raise TrackIntegrityError(f"lists files outside its folder: {bad[:3]}", file=where)
    for key, want in (("track_id", track.spec.track_id), ("version", track.spec.version)):
        if str(manifest.get(key)) != str(want):
            raise TrackIntegrityError(
                f"is the artifact of {key} {manifest.get(key)!r}; the track's is {want!r}",
                file=where,
                field=key,
            )
    meta = json.loads((src / META_FILE).read_text())
    if int(meta.get("d_model", -1)) != int(track.d_model):
        raise TrackIntegrityError(
            f"has d_model {meta.get('d_model')!r}; the track's is {track.d_model}",
            file=str(src / META_FILE),
            field="d_model",
        )
    check_artifact_sae(meta.get("sae") or {}, sae, str(src / META_FILE))
    dest.mkdir()
    for name in [*names, MANIFEST]:
        shutil.copyfile(src / name, dest / name)
    verify_statistics(dest)  # what the sandbox gets is what was checked


def prepare_work(
    track: TrackLike,
    generator_file: Path,
    work: Path,
    sae: Any = None,
    *,
    tier: str = "rows",
    stats_dir: str | Path | None = None,
) -> None:
    """The sandbox's inputs: ``generator.py``, ``track.json`` (spec, sizes, units, d_model),
    ``sae/`` and, for the rows tier, ``public.safetensors`` (activations and tokens of the
    public split), for the statistics tier the artifact ``stats_dir`` as ``statistics/``
    (:func:`copy_statistics`) and no split."""
    from safetensors.torch import save_file

    _check_tier(tier, sae, stats_dir)
    shutil.copyfile(generator_file, work / "generator.py")
    meta = {
        "sizes": {"public": len(track.acts("public")), "heldout": track.heldout_size},
        "units": track.units,
        "d_model": track.d_model,
    }
    (work / "track.json").write_text(json.dumps({"spec": track.spec.to_dict(), "meta": meta}))
    if tier == "statistics":
        copy_statistics(track, stats_dir, work / "statistics", sae)
    else:
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


def _kill(proc: subprocess.Popen) -> None:
    try:
        proc.kill()  # bwrap; --die-with-parent and the PID namespace take the sandbox with it
    except OSError:
        pass


def run_sandboxed(
    generator_file: str | Path,
    track: TrackLike,
    n: int,
    *,
    seed: int = 0,
    sae: Any = None,
    class_name: str | None = None,
    limits: SandboxLimits | None = None,
    tier: str = "rows",
    stats_dir: str | Path | None = None,
) -> SandboxRun:
    """Run ``generator_file``'s generator in the sandbox (fit on the public split, or for
    ``tier="statistics"`` on the artifact folder ``stats_dir`` and ``sae``, which it needs;
    sample ``n`` rows with ``seed``) and return its sample, checked (float32 [n, d_model],
    finite), and description; ``SubmissionError`` naming the file when it fails, times out,
    breaks a limit or hands back anything malformed (its last error line is quoted). Nothing
    the sandbox writes is opened by path: the sample and the result come back through pipes,
    each read with a byte cap."""
    import time

    from challenge.submission import HEADER_BYTES, load_acts

    lim = limits or SandboxLimits()
    _check_tier(tier, sae, stats_dir)
    src = Path(generator_file)
    if not src.is_file():
        raise SubmissionError("generator file missing", file=str(src))
    where = str(src)
    n, d_model = int(n), int(track.d_model)
    acts_cap = 8 * n * d_model + HEADER_BYTES  # as validation: room for a shape message
    runner = Path(__file__).with_name("sandbox_runner.py")
    with tempfile.TemporaryDirectory(prefix="plateau-sandbox-") as tmp:
        work = Path(tmp, "work")
        work.mkdir()
        prepare_work(track, src, work, sae, tier=tier, stats_dir=stats_dir)
        cmd = sandbox_command(
            work, lim, sys.executable, "-s", "-B", f"{LIB}/challenge/{runner.name}"
        )
        pipes = {k: os.pipe() for k in ("result", "acts", "stdout", "stderr")}
        job = {
            "n": n,
            "seed": int(seed),
            "class_name": class_name,
            "tier": tier,
            "result_fd": pipes["result"][1],
            "acts_fd": pipes["acts"][1],
        }
        t0 = time.perf_counter()
        try:
            (work / "job.json").write_text(json.dumps(job))
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=pipes["stdout"][1],
                stderr=pipes["stderr"][1],
                pass_fds=(pipes["result"][1], pipes["acts"][1]),
                preexec_fn=_limits(lim),
            )
        except BaseException:
            for r, w in pipes.values():
                os.close(r)
                os.close(w)
            raise
        for _, w in pipes.values():
            os.close(w)
        log = lim.log_mb << 20
        drains = {
            "result": _Drain(pipes["result"][0], RESULT_BYTES, RESULT_BYTES),
            "acts": _Drain(pipes["acts"][0], acts_cap, acts_cap),
            "stdout": _Drain(pipes["stdout"][0], LOG_TAIL_BYTES, log, tail=True),
            "stderr": _Drain(pipes["stderr"][0], LOG_TAIL_BYTES, log, tail=True),
        }
        for d in drains.values():
            d.on_over = lambda: _kill(proc)
            d.start()
        timed_out = False
        try:
            proc.wait(timeout=lim.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.poll() is None:
                _kill(proc)
                proc.wait()
            for d in drains.values():
                d.join(timeout=30)
        seconds = time.perf_counter() - t0
    if timed_out:
        raise SubmissionError(
            f"generator ran past the {lim.wall_seconds:g} s limit in the sandbox", file=where
        )
    if any(d.is_alive() for d in drains.values()):
        raise SubmissionError("the sandbox kept its output open after it ended", file=where)
    for k in ("stdout", "stderr"):
        if drains[k].over:
            raise SubmissionError(
                f"generator wrote more than {lim.log_mb} MB to {k} in the sandbox; stopped",
                file=where,
                field=k,
            )
    if drains["result"].over:
        raise SubmissionError(
            f"the sandbox's result is more than {RESULT_BYTES} bytes; stopped",
            file=where,
            field="result",
        )
    if drains["acts"].over:
        raise SubmissionError(
            f"the sandbox sent more than {acts_cap} bytes of activations (twice float32 "
            f"[{n}, {d_model}] and a header); stopped",
            file=where,
            field="activations",
        )
    stderr = drains["stderr"].text()
    info: dict[str, str] = {}
    if drains["result"].data:
        try:
            info = _parse_result(drains["result"].data, where)
        except SubmissionError:
            if proc.returncode == 0:
                raise
    if proc.returncode != 0 or "error" in info:
        if "error" in info:
            why = info["error"]
        else:
            tail = [ln for ln in stderr.splitlines() if ln.strip()]
            why = _one_line(tail[-1] if tail else f"exit status {proc.returncode}")
            code = proc.returncode
            sig = -code if code < 0 else code - 128
            if sig > 0:  # bwrap passes a killed child on as 128 + signal
                why = f"killed by signal {sig} (the CPU or memory limit?): {why}"
        raise SubmissionError(f"generator failed in the sandbox: {why}", file=where)
    if not info:
        raise SubmissionError(
            "the sandbox ended without the runner's result (did the generator exit by itself?)",
            file=where,
            field="result",
        )
    if not drains["acts"].data:
        raise SubmissionError(
            "the sandbox ended without sending activations", file=where, field="activations"
        )
    try:
        acts = load_acts(drains["acts"].data, where)
    except SubmissionError as e:
        raise SubmissionError(
            f"the sandbox's activations: {e.problem}", file=where, field="activations"
        ) from None
    return SandboxRun(
        acts=_check_acts(acts, n, d_model, where),
        description=info["description"],
        seconds=seconds,
        stdout=drains["stdout"].text(),
        stderr=stderr,
    )


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; the ones created, deepest first."""
    made = []
    p = path
    while not os.path.lexists(p):
        made.append(p)
        p = p.parent
    for d in reversed(made):
        d.mkdir(exist_ok=True)
    return made


def _remove_dirs(made: list[Path]) -> None:
    """Remove the folders :func:`_make_dirs` created, deepest first, while they are empty."""
    for d in made:
        try:
            d.rmdir()
        except OSError:
            return


def _swap_in(new: Path, final: Path) -> None:
    """Rename ``new`` (a sibling of ``final``) to ``final``; an old ``final`` is first renamed
    into a hidden sibling folder, removed after (put back when the second rename fails)."""
    if not os.path.lexists(final):
        new.rename(final)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    final.rename(aside / "old")
    try:
        new.rename(final)
    except BaseException:
        (aside / "old").rename(final)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def statistics_sources(track: TrackLike) -> tuple[Path, Any]:
    """The statistics tier's inputs of ``track`` as the sandbox copies them: the folder of its
    statistics artifact (the published one, else the one cached on this machine, built when
    missing: ``challenge.statistics.published.statistics_inputs``) and the SAE it was built
    with (refused when the track's SAE differs from the one the artifact names)."""
    from challenge.statistics.published import statistics_dir, statistics_inputs

    _, sae = statistics_inputs(track)
    return statistics_dir(track), sae


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
    tier: str = "rows",
    stats_dir: str | Path | None = None,
) -> Any:
    """Run the generator in the sandbox, validate its output, score it and record it on the
    board as an entry verified by the sandbox (``challenge.scoring.recording``), and put its
    submission folder ``<submissions>/<track id>/<name>/`` in place.

    ``tier="rows"``: fitted on the public split (and ``sae``), recorded as ``synthetic``.
    ``tier="statistics"``: fitted on the statistics artifact folder ``stats_dir`` and ``sae``
    (both default to :func:`statistics_sources`; an explicit ``stats_dir`` needs an explicit
    ``sae``), recorded as ``statistics`` with access ``["statistics", "sae"]``.

    Order: the sample is checked in memory (:func:`run_sandboxed`), written to a private
    staging folder outside ``submissions`` and validated there (every check of
    ``challenge.scoring.validation``, copy check included); only then is a hidden sibling
    ``.<name>.*`` of the folder written, recorded (``record`` validates it again, scores it,
    writes the record) and renamed into place. Any failure removes the sibling (and the
    folders made for it): the submissions and the board stay as they were, an entry being
    replaced (``replace``) included."""
    from challenge.access import entry_access
    from challenge.scoring.recording import record
    from challenge.scoring.validation import validate_submission
    from challenge.submission import ACTS_FILE, META_FILE, check_name, write_submission

    check_name(name)
    checks.choice(tier, TIERS, "tier")
    existing = Path(board) / track.spec.track_id / f"{name}.json"
    if os.path.lexists(existing) and not replace:
        raise SubmissionError(
            f"{name!r} is already on the board ({existing}); pass --replace to replace it",
            field="name",
        )
    if tier == "statistics" and stats_dir is None and sae is None:
        stats_dir, sae = statistics_sources(track)
    _check_tier(tier, sae, stats_dir)
    digest = file_sha256(generator_file)
    run = run_sandboxed(
        generator_file,
        track,
        track.required_n,
        seed=seed,
        sae=sae,
        class_name=class_name,
        limits=limits,
        tier=tier,
        stats_dir=stats_dir,
    )
    if tier == "statistics":
        uses, access = (
            ["statistics_artifact", "sae"],
            entry_access("statistics", "sandbox", ["statistics", "sae"], digest),
        )
    elif sae is not None:
        uses, access = (
            ["public_activations", "sae"],
            entry_access("synthetic", "sandbox", ["public", "sae"], digest),
        )
    else:
        uses, access = (
            ["public_activations"],
            entry_access("synthetic", "sandbox", ["public"], digest),
        )
    meta = {
        "name": name,
        "authors": authors,
        "track_id": track.spec.track_id,
        "track_version": track.spec.version,
        "generator": run.description or f"sandboxed generator {Path(generator_file).name}",
        "code": f"{Path(generator_file).name} (sha256 {digest[:16]}), verified in the sandbox",
        "seed": seed,
        "uses": uses,
    }
    final = Path(submissions) / track.spec.track_id / name
    with tempfile.TemporaryDirectory(prefix="plateau-verify-") as tmp:
        staged = write_submission(Path(tmp) / name, meta, run.acts)
        try:  # every check, before anything is written under submissions/ (its statistics
            # are the record's, made when `record` validates the folder that lands)
            validate_submission(staged, track, memorisation=False)
        except SubmissionError as e:
            raise SubmissionError(
                f"the sandbox's output fails validation: {e.problem}",
                file=str(generator_file),
                field=e.field,
            ) from None
        made = _make_dirs(final.parent)
        new = Path(tempfile.mkdtemp(prefix=f".{name}.new-", dir=final.parent))
        try:
            for f in (META_FILE, ACTS_FILE):
                shutil.copyfile(staged / f, new / f)
            rep = record(new, track, lm, score_cfg, board, access=access, replace=replace)
            _swap_in(new, final)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            _remove_dirs(made)
            raise
    return rep
