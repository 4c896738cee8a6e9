"""Everything the sandbox hands back is untrusted input (issue 30 item 5). Each attack the red
team reproduced with a generator file fails with one line, writes nothing (no submission
folder, no record; an entry being replaced keeps its folder and record byte for byte), does not
hang and does not hold the flood in host memory. Limits are lowered so that the tests write
MBs, not GBs."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from challenge.errors import ConfigError, SubmissionError
from challenge.sandbox import (
    LOG_TAIL_BYTES,
    RESULT_BYTES,
    SandboxLimits,
    _Drain,
    _parse_result,
    _swap_in,
    sandbox_command,
    verify_generator,
)

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap not installed (scripts/setup.sh installs it)"
)
LIMITS = SandboxLimits(wall_seconds=300, cpu_seconds=300, memory_gb=6)
SMALL = SandboxLimits(
    wall_seconds=300, cpu_seconds=300, memory_gb=6, output_mb=2, out_mb=4, tmp_mb=4, log_mb=2
)

GEN = '''
import errno
import json
import os
import sys

import torch


class Gen:
    """A test generator."""

    def fit(self, track, lm):
        self.x = track.acts("public")
{fit}

    def sample(self, n, *, seed):
{sample}
'''
GAUSS = """\
g = torch.Generator().manual_seed(seed)
mu, sd = self.x.mean(0), self.x.std(0)
return mu + sd * torch.randn(n, self.x.shape[1], generator=g)"""
OWN_OUTPUT = """\
from safetensors.torch import save
job = json.load(open("/sandbox/work/job.json"))
n, d = job["n"], self.x.shape[1]
acts = save({"activations": self.x[:1].repeat(n, 1) + torch.randn(n, d)})
"""


def _gen(tmp_path, fit="pass", sample=GAUSS, name="gen.py") -> Path:
    text = GEN.replace("{fit}", textwrap.indent(fit, " " * 8)).replace(
        "{sample}", textwrap.indent(sample, " " * 8)
    )
    p = tmp_path / name
    p.write_text(text)
    return p


def _tree(root: Path) -> dict[str, object]:
    """Every entry under ``root`` (links not followed): file bytes, link targets, folders."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes()
    return out


@pytest.fixture
def places(tmp_path, tiny_track):
    """A board and a submissions root holding a recorded entry ``old`` (its folder and its
    record files), and a snapshot of both to compare against."""
    tid = tiny_track.spec.track_id
    board, subs = tmp_path / "board", tmp_path / "subs"
    (subs / tid / "old").mkdir(parents=True)
    (subs / tid / "old" / "submission.json").write_text('{"name": "old"}')
    (subs / tid / "old" / "activations.safetensors").write_bytes(b"old activations")
    (board / tid).mkdir(parents=True)
    for ext in ("json", "npz", "png"):
        (board / tid / f"old.{ext}").write_bytes(f"old record {ext}".encode())
    before = {"board": _tree(board), "subs": _tree(subs)}

    def unchanged() -> None:
        assert {"board": _tree(board), "subs": _tree(subs)} == before

    return board, subs, unchanged


def _verify(gen, tiny_track, lm, places, *, name="new", replace=False, limits=LIMITS):
    board, subs, _ = places
    return verify_generator(
        gen,
        tiny_track,
        lm,
        name=name,
        authors=["red team"],
        limits=limits,
        board=board,
        submissions=subs,
        replace=replace,
    )


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.isprintable() and len(msg) < 700, msg
    return msg


# 1. the output is validated before anything is written; --replace swaps only on success


@needs_bwrap
@pytest.mark.parametrize(
    "sample, name, replace, match",
    [
        (
            "return torch.full((n, self.x.shape[1]), float('nan'))",
            "new",
            False,
            r"gen\.py, field activations: the sandbox's activations have \d+ rows with NaN",
        ),
        (
            "return torch.randn(n - 1, 577)",
            "old",
            True,
            r"activations: the sandbox's activations have shape \[\d+, 577\], not \[\d+, 576\]",
        ),
        (
            "return torch.randn(4 * n, 576)",
            "new",
            False,
            r"gen\.py, field activations: the sandbox sent more than \d+ bytes of activations",
        ),
        (
            "return self.x[torch.arange(n) % len(self.x)]",
            "old",
            True,
            r"gen\.py, field activations: the sandbox's output fails validation: ",
        ),
    ],
    ids=["nan-rows", "wrong-shape-replace", "too-many-rows", "copied-rows-replace"],
)
def test_a_refused_output_writes_nothing(
    tiny_track, smollm, tmp_path, places, sample, name, replace, match
):
    gen = _gen(tmp_path, sample=sample)
    with pytest.raises(SubmissionError, match=match) as e:
        _verify(gen, tiny_track, smollm, places, name=name, replace=replace)
    _one_line(e)
    places[2]()


@needs_bwrap
def test_a_failed_scoring_leaves_the_replaced_entry_intact(
    tiny_track, smollm, tmp_path, places, monkeypatch
):
    """A valid output whose scoring fails: the entry being replaced keeps its folder and
    record byte for byte, and no hidden staging folder is left."""
    import challenge.scoring.recording as recording

    def broken(*args, **kwargs):
        raise SubmissionError("the scorer broke")

    monkeypatch.setattr(recording, "score_submission", broken)
    gen = _gen(tmp_path)
    with pytest.raises(SubmissionError, match="^the scorer broke$") as e:
        _verify(gen, tiny_track, smollm, places, name="old", replace=True)
    _one_line(e)
    places[2]()


@needs_bwrap
@pytest.mark.slow  # sandbox start + scoring: ~1-3 min on a busy 2-core machine
def test_a_replacing_run_swaps_folder_and_record_together(tiny_track, smollm, tmp_path, places):
    """The success path of --replace: the new folder is in place, the record is rewritten from
    it, and no hidden staging folder is left."""
    from challenge.scoring import ScoreConfig

    board, subs, _ = places
    tid = tiny_track.spec.track_id
    verify_generator(
        _gen(tmp_path),
        tiny_track,
        smollm,
        name="old",
        authors=["tester"],
        limits=LIMITS,
        score_cfg=ScoreConfig().quick(),
        board=board,
        submissions=subs,
        replace=True,
    )
    assert sorted(os.listdir(subs / tid)) == ["old"]
    assert sorted(os.listdir(subs / tid / "old")) == ["activations.safetensors", "submission.json"]
    meta = json.loads((subs / tid / "old" / "submission.json").read_text())
    doc = json.loads((board / tid / "old.json").read_text())
    assert meta["generator"] == "A test generator." and meta["code"].startswith("gen.py (sha256 ")
    assert {k: doc["submission"][k] for k in meta} == meta
    assert doc["submission"]["access"]["verified_by"] == "sandbox"


def test_swap_in_replaces_a_folder_and_leaves_no_sibling(tmp_path):
    final, new = tmp_path / "entry", tmp_path / ".entry.new-x"
    final.mkdir()
    (final / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    _swap_in(new, final)
    assert (final / "a").read_text() == "new" and os.listdir(tmp_path) == ["entry"]
    other = tmp_path / ".entry.new-y"
    other.mkdir()
    _swap_in(other, tmp_path / "fresh")
    assert sorted(os.listdir(tmp_path)) == ["entry", "fresh"]


# 2. links planted in /sandbox/out are never followed; the result is parsed strictly


@needs_bwrap
def test_planted_links_and_fifos_are_never_opened(tiny_track, smollm, tmp_path, places):
    """The generator plants result.json -> a host file outside the sandbox, a link to
    /dev/zero and a fifo in /sandbox/out, sends its own activations and exits: the host never
    opens them (no hang, the host file's content goes nowhere)."""
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST SECRET CONTENT")
    fit = OWN_OUTPUT + textwrap.dedent(f"""\
        os.symlink({str(secret)!r}, "/sandbox/out/result.json")
        os.symlink("/dev/zero", "/sandbox/out/activations.safetensors")
        os.mkfifo("/sandbox/out/error.txt")
        os.write(job["acts_fd"], acts)
        os._exit(0)""")
    t0 = time.monotonic()
    with pytest.raises(SubmissionError, match=r"ended without the runner's result") as e:
        _verify(_gen(tmp_path, fit=fit), tiny_track, smollm, places)
    assert "SECRET" not in _one_line(e) and time.monotonic() - t0 < 200
    places[2]()


@needs_bwrap
def test_a_forged_result_is_parsed_strictly(tiny_track, smollm, tmp_path, places):
    fit = OWN_OUTPUT + textwrap.dedent("""\
        os.write(job["acts_fd"], acts)
        os.write(job["result_fd"], json.dumps({"description": ["not", "text"]}).encode())
        os._exit(0)""")
    with pytest.raises(
        SubmissionError, match=r"field result\.description: must be a string, got list"
    ) as e:
        _verify(_gen(tmp_path, fit=fit), tiny_track, smollm, places)
    _one_line(e)
    places[2]()


@pytest.mark.parametrize(
    "raw, match",
    [
        (b" " * (RESULT_BYTES + 1), "more than 65536 bytes"),
        (b"\xff", "not UTF-8"),
        (b'{"description": NaN}', "not valid JSON"),
        (b"[1]", "must be"),
        (b'{"description": "a", "access": "x"}', "must be"),
        (b'{"description": 3}', "field result.description: must be a string, got int"),
        (b'{"description": "a\\u0000b"}', "control"),
        (b'{"error": 3}', "field result.error: must be a string"),
    ],
)
def test_the_result_document_is_parsed_strictly(raw, match):
    with pytest.raises(SubmissionError, match=re.escape(match)) as e:
        _parse_result(raw, "gen.py")
    _one_line(e)


def test_a_result_description_is_folded_and_cut():
    doc = json.dumps({"description": "line one\n\tline two " + "x" * 5000}).encode()
    desc = _parse_result(doc, "gen.py")["description"]
    assert desc.startswith("line one line two x") and len(desc) == 2000
    err = _parse_result(json.dumps({"error": "a\nb\x07" + "y" * 900}).encode(), "g")["error"]
    assert err.startswith("a b?") and len(err) == 400


# 3. a generator that writes its own activations and exits without a result


@needs_bwrap
def test_own_activations_without_a_result_is_one_line(tiny_track, smollm, tmp_path, places):
    fit = OWN_OUTPUT + textwrap.dedent("""\
        open("/sandbox/out/activations.safetensors", "wb").write(acts)
        os.write(job["acts_fd"], acts)
        os._exit(0)""")
    with pytest.raises(SubmissionError, match=r"gen\.py, field result: the sandbox ended") as e:
        _verify(_gen(tmp_path, fit=fit), tiny_track, smollm, places)
    _one_line(e)
    places[2]()


# 4. stdout / stderr: drained with a kept tail, a flood is stopped


@needs_bwrap
def test_a_stdout_flood_is_stopped(tiny_track, smollm, tmp_path, places):
    fit = textwrap.dedent("""\
        block = "x" * (1 << 20)
        for _ in range(64):
            sys.stdout.write(block)
            sys.stdout.flush()""")
    t0 = time.monotonic()
    with pytest.raises(
        SubmissionError, match=r"gen\.py, field stdout: generator wrote more than 2 MB to stdout"
    ) as e:
        _verify(_gen(tmp_path, fit=fit), tiny_track, smollm, places, limits=SMALL)
    _one_line(e)
    assert time.monotonic() - t0 < 200
    places[2]()


def test_a_drained_log_keeps_only_its_tail():
    r, w = os.pipe()
    block = bytes(range(256)) * 4096  # 1 MiB
    calls = []
    d = _Drain(r, LOG_TAIL_BYTES, 8 << 20, tail=True, on_over=lambda: calls.append(1))
    d.start()
    for _ in range(32):
        os.write(w, block)
    os.write(w, b"THE END")
    os.close(w)
    d.join(timeout=30)
    assert d.total == (32 << 20) + 7 and d.over and calls == [1]
    assert len(d.data) == LOG_TAIL_BYTES and d.data.endswith(b"THE END")


def test_draining_a_flood_keeps_host_memory_flat():
    """In a fresh process (so the high-water mark is its own): 512 MB through the stdout and
    stderr drains of the host grow its peak RSS by far less than the volume."""
    code = textwrap.dedent("""\
        import os, resource, threading
        from challenge.sandbox import LOG_TAIL_BYTES, _Drain
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        drains = []
        for _ in range(2):
            r, w = os.pipe()
            d = _Drain(r, LOG_TAIL_BYTES, 1 << 40, tail=True)
            d.start()
            drains.append((d, w))
        block = b"y" * (1 << 20)
        for _ in range(256):
            for _, w in drains:
                os.write(w, block)
        for d, w in drains:
            os.close(w)
            d.join()
            assert d.total == 256 << 20 and len(d.data) == LOG_TAIL_BYTES
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024)""")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    grew = int(out.stdout.split()[-1])
    assert grew < 32 << 20, f"peak RSS grew by {grew} bytes for 512 MB drained"


# 5. /tmp, /dev/shm, / and /dev: bounded or read-only


@needs_bwrap
def test_the_writable_places_are_bounded(tiny_track, smollm, tmp_path, places):
    """With tmp_mb = 4 (and 16 MB per file): /tmp and /dev/shm take 4 MB (ENOSPC after), the root, /dev and the
    work folder are read-only; the generator reports what it managed and fails."""
    fit = textwrap.dedent("""\
        got = []
        for path in ("/tmp/f", "/dev/shm/f", "/f", "/dev/f", "/sandbox/work/f"):
            mb = 0
            try:
                with open(path, "wb", buffering=0) as f:
                    for _ in range(16):
                        f.write(b"z" * (1 << 20))
                        mb += 1
                got.append(f"{path}:ok:{mb}")
            except OSError as e:
                got.append(f"{path}:{errno.errorcode[e.errno]}:{mb}")
        raise RuntimeError(" ".join(got))""")
    lim = dataclasses.replace(SMALL, output_mb=16)  # the tmpfs size, not the file size, stops it
    with pytest.raises(SubmissionError, match="generator failed in the sandbox") as e:
        _verify(_gen(tmp_path, fit=fit), tiny_track, smollm, places, limits=lim)
    msg = _one_line(e)
    found = dict(re.findall(r"(/\S+):(\w+):\d+", msg))
    assert found == {
        "/tmp/f": "ENOSPC",
        "/dev/shm/f": "ENOSPC",
        "/f": "EROFS",
        "/dev/f": "EROFS",
        "/sandbox/work/f": "EROFS",
    }, msg
    assert all(int(mb) <= 4 for mb in re.findall(r":ENOSPC:(\d+)", msg)), msg
    places[2]()


# 6. /sandbox/out: one size limit for all its files, enforced while writing


@needs_bwrap
def test_many_files_in_out_are_stopped_at_the_total(tiny_track, smollm, tmp_path, places):
    """With out_mb = 4 (and 2 MB per file): 40 files of 512 KB stop at ~4 MB in all."""
    fit = textwrap.dedent("""\
        total = 0
        try:
            for i in range(40):
                with open(f"/sandbox/out/part{i}", "wb", buffering=0) as f:
                    f.write(b"w" * (512 << 10))
                total += 512 << 10
        except OSError as e:
            raise RuntimeError(f"{errno.errorcode[e.errno]} after {total} bytes") from None
        raise RuntimeError(f"wrote all {total} bytes")""")
    with pytest.raises(SubmissionError, match=r"RuntimeError: ENOSPC after \d+ bytes") as e:
        _verify(_gen(tmp_path, fit=fit), tiny_track, smollm, places, limits=SMALL)
    total = int(re.search(r"after (\d+) bytes", _one_line(e)).group(1))
    assert 0 < total <= 4 << 20
    places[2]()


def test_sandbox_limits_are_checked_and_mounted():
    for field, value in [("out_mb", 0), ("tmp_mb", 1.5), ("log_mb", True), ("wall_seconds", "1")]:
        with pytest.raises(ConfigError, match=f"field {field}"):
            SandboxLimits(**{field: value})
    cmd = " ".join(sandbox_command(Path("/w"), SMALL, "python"))
    assert f"--size {4 << 20} --tmpfs /tmp" in cmd
    assert f"--size {4 << 20} --tmpfs /sandbox/out" in cmd
    assert f"--size {4 << 20} --tmpfs /dev/shm --remount-ro /dev" in cmd
    assert "--remount-ro / " in cmd and "--bind " not in cmd.replace("--ro-bind ", "")


def test_the_runner_writes_no_file():
    """The runner hands its output back through pipes only (the host opens no sandbox path)."""
    src = (Path(__file__).parents[1] / "challenge" / "sandbox_runner.py").read_text()
    assert "/sandbox/out" not in src and "write_text" not in src and "save_file" not in src
