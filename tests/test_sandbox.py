"""Verified generators in the bubblewrap sandbox on the tiny track: a generator that reads the
model file, the held-out split or the network fails with a clear message; an honest one is
validated, scored and recorded as a verified synthetic entry."""

import json
import shutil
import socket
import threading
from pathlib import Path

import pytest

from challenge.errors import SubmissionError
from challenge.sandbox import SandboxLimits, run_sandboxed, verify_generator

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap not installed (scripts/setup.sh installs it)"
)
LIMITS = SandboxLimits(wall_seconds=300, cpu_seconds=300, memory_gb=6)

HONEST = '''
import torch


class GaussianFit:
    """N(mu, Sigma) of the public split."""

    def fit(self, track, lm):
        x = track.acts("public").double()
        self.mu = x.mean(0)
        cov = torch.cov(x.T) + 1e-4 * torch.eye(x.shape[1], dtype=torch.float64)
        self.chol = torch.linalg.cholesky(cov)

    def sample(self, n, *, seed):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.mu.shape[0], generator=g, dtype=torch.float64)
        return (self.mu + z @ self.chol.T).float()
'''

CHEAT = """
import torch


class Cheat:
    def fit(self, track, lm):
        {body}

    def sample(self, n, *, seed):
        return torch.zeros(n, 576)
"""


def _file(tmp_path, text, name="gen.py") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _cheat(tmp_path, body):
    return _file(tmp_path, CHEAT.replace("{body}", body))


def test_reading_the_model_file_fails(tiny_track, tmp_path):
    from challenge.models import embedded_gguf_path

    gguf = embedded_gguf_path("smollm2-135m")
    assert gguf.is_file() and gguf.stat().st_size > 50e6  # the real weights, outside
    gen = _cheat(tmp_path, f"open({str(gguf)!r}, 'rb').read(16)")
    with pytest.raises(
        SubmissionError,
        match=rf"gen\.py: generator failed in the sandbox: FileNotFoundError: .*{gguf.name}",
    ):
        run_sandboxed(gen, tiny_track, 128, limits=LIMITS)


def test_reading_the_heldout_split_fails(tiny_track, tmp_path):
    held = Path(tiny_track.path) / "data" / "heldout.parquet"
    assert held.is_file()
    gen = _cheat(tmp_path, f"open({str(held)!r}, 'rb').read(16)")
    with pytest.raises(SubmissionError, match="FileNotFoundError: .*heldout.parquet"):
        run_sandboxed(gen, tiny_track, 128, limits=LIMITS)
    gen = _cheat(tmp_path, "track.acts('heldout')")
    with pytest.raises(SubmissionError, match="PermissionError: the sandbox holds only the public"):
        run_sandboxed(gen, tiny_track, 128, limits=LIMITS)


def test_the_network_is_unreachable(tiny_track, tmp_path):
    """A server on 127.0.0.1 outside the sandbox holds the held-out rows; the sandbox has its
    own empty network namespace, so the generator cannot reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.5)
    port, hits, stop = server.getsockname()[1], [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            hits.append(1)
            conn.sendall(b"held-out rows")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        probe = socket.create_connection(("127.0.0.1", port), timeout=5)  # reachable outside
        assert probe.recv(64) == b"held-out rows"
        probe.close()
        gen = _cheat(
            tmp_path,
            f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).recv(64)",
        )
        with pytest.raises(SubmissionError, match="ConnectionRefusedError"):
            run_sandboxed(gen, tiny_track, 128, limits=LIMITS)
    finally:
        stop.set()
        t.join(timeout=5)
        server.close()
    assert hits == [1]  # only the probe from outside got through


@pytest.mark.slow  # sandbox start + scoring: ~1-3 min on a busy 2-core machine
def test_an_honest_generator_is_verified_scored_and_marked(tiny_track, smollm, tmp_path):
    from challenge.scoring import ScoreConfig
    from challenge.scoring.board import load_entries

    gen = _file(tmp_path, HONEST)
    board, subs = tmp_path / "board", tmp_path / "subs"
    rep = verify_generator(
        gen,
        tiny_track,
        smollm,
        name="gauss_fit",
        authors=["tester"],
        limits=LIMITS,
        score_cfg=ScoreConfig().quick(),
        board=board,
        submissions=subs,
    )
    tid = tiny_track.spec.track_id
    doc = json.loads((board / tid / "gauss_fit.json").read_text())
    access = doc["submission"]["access"]
    assert access["category"] == "synthetic" and access["verified_by"] == "sandbox"
    assert len(access["code_sha256"]) == 64 and "copy check" in doc["validation"]["checks"]
    assert rep.submission["name"] == "gauss_fit"
    rows = load_entries(tid, board)
    assert [(r["name"], r["section"], r["verified_by"], r["rank"]) for r in rows] == [
        ("gauss_fit", "synthetic", "sandbox", None)
    ]  # the rows tier is listed, not ranked (moved public rows can enter it)
    meta = json.loads((subs / tid / "gauss_fit" / "submission.json").read_text())
    assert meta["code"].startswith("gen.py (sha256 ") and meta["generator"].startswith("N(mu")
