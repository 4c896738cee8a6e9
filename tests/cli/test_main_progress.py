"""The main job shows where it is: a progress line per entry with the time left, one line and
exit 130 on Ctrl-C, and no ``datasets`` bars when a track is read or written."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from challenge import cli, pipeline
from challenge.errors import SubmissionError
from challenge.progress import duration, entry_line, time_left


def test_duration_reads_as_seconds_minutes_hours():
    assert duration(0) == "0 s"
    assert duration(42.4) == "42 s"
    assert duration(482) == "8 min 02 s"
    assert duration(3 * 3600 + 7 * 60 + 59) == "3 h 07 min"
    assert duration(-3) == "0 s"


def test_time_left_is_mean_seconds_per_entry_times_entries_left():
    assert time_left([], 18) is None
    assert time_left([480.0], 18) == 480.0 * 17
    assert time_left([400.0, 600.0], 18) == 500.0 * 16
    assert time_left([10.0, 20.0, 30.0], 3) == 0.0


def test_entry_line_text():
    assert (
        entry_line(1, 18, "gaussian", "starting", 5, [])
        == "entry 1 of 18 (gaussian): starting; elapsed 5 s, left estimating"
    )
    assert (
        entry_line(3, 18, "pca", "scored in 9 min 00 s", 1500, [480, 480, 540])
        == "entry 3 of 18 (pca): scored in 9 min 00 s; elapsed 25 min 00 s, left ~2 h 05 min"  # 500 s x 15
    )


def test_run_main_logs_a_line_per_entry_start_and_finish(monkeypatch, caplog, tmp_path):
    """Scoring faked (each entry costs 60 s of a fake clock; one is refused): the lines count
    the entries and estimate the time left from those done."""
    now = [0.0]
    monkeypatch.setattr(pipeline, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    def generate(gen, track, lm, **kw):
        now[0] += 60.0
        if gen.name == "bad":
            raise SubmissionError("refused for the test")
        return tmp_path / gen.name

    head = SimpleNamespace(score=0.5, ci=(0.4, 0.6), mean_ks=0.1)
    monkeypatch.setattr(pipeline, "generate", generate)
    monkeypatch.setattr(pipeline, "record", lambda *a, **k: SimpleNamespace(headline=head))
    monkeypatch.setattr(pipeline, "render", lambda *a, **k: [])
    monkeypatch.setattr(pipeline, "generator_access", lambda gen: {})
    spec = SimpleNamespace(track_id="t", version="1", model="m")
    track = SimpleNamespace(spec=spec, manifest_sha256="x", path=None, units={}, data_sha256=None)
    gens = {n: (lambda n=n: SimpleNamespace(name=n, access=())) for n in ("a", "bad", "c")}
    cfg = pipeline.MainConfig(board=tmp_path / "board")
    with caplog.at_level(logging.INFO, logger="main"):
        pipeline.run_main(track, gens, cfg, lm=object())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("entry ")]
    assert lines == [
        "entry 1 of 3 (a): starting; elapsed 0 s, left estimating",
        "entry 1 of 3 (a): scored in 1 min 00 s; elapsed 1 min 00 s, left ~2 min 00 s",
        "entry 2 of 3 (bad): starting; elapsed 1 min 00 s, left ~2 min 00 s",
        "entry 2 of 3 (bad): refused after 1 min 00 s; elapsed 2 min 00 s, left ~1 min 00 s",
        "entry 3 of 3 (c): starting; elapsed 2 min 00 s, left ~1 min 00 s",
        "entry 3 of 3 (c): scored in 1 min 00 s; elapsed 3 min 00 s, left ~0 s",
    ]


def _interrupt(only: tuple[str, ...] = (), quick: bool = False) -> None:
    """A command interrupted by Ctrl-C."""
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["main", "--only", "gaussian", "heldout_real", "--quick"],
            "interrupted; run the same command again to resume from the caches: "
            "plateau main --only gaussian heldout_real --quick",
        ),
        (["leaderboard", "--quick"], "interrupted"),
    ],
)
def test_interrupt_exits_130_with_one_line(args, line, monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, args[0], _interrupt)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 130
    assert e.value.__context__ is None or e.value.__suppress_context__
    err = capsys.readouterr().err
    assert err.splitlines() == [line]
    assert "Traceback" not in err


def test_interrupt_line_quotes_the_command():
    assert cli.interrupted_line(["score", "my sub", "--name", "x"]).endswith(
        "plateau score 'my sub' --name x"
    )
    assert cli.interrupted_line([]) == "interrupted"
    assert cli.interrupted_line(["study-layers"]).startswith("interrupted; run the same command")


def test_reading_and_writing_a_track_prints_no_datasets_bars(tiny_track_dir, tmp_path, capfd):
    import datasets

    from challenge.store import write_track
    from challenge.track import load_track

    before = datasets.are_progress_bars_disabled(), datasets.logging.get_verbosity()
    capfd.readouterr()
    tr = load_track(tiny_track_dir)
    write_track(
        tmp_path / "t", {"track_id": "t", "version": "1"}, {"x": {"a": np.zeros((3, 2))}}, ""
    )
    err = capfd.readouterr().err
    assert len(tr.acts("public")) > 0
    assert "Generating split" not in err
    assert "Creating parquet" not in err
    assert (datasets.are_progress_bars_disabled(), datasets.logging.get_verbosity()) == before
