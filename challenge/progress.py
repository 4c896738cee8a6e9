"""One line of a job's progress over named entries (``plateau main``): entry i of n, the time
elapsed and the time left, estimated from the entries done so far (mean seconds per finished
entry x entries not finished). A line per entry start and finish, not a bar: the engine's own
per-call bars (``EngineConfig.progress``) keep the terminal's last line."""

from __future__ import annotations

from collections.abc import Sequence


def duration(seconds: float) -> str:
    """``seconds`` rounded for a person: ``42 s``, ``8 min 02 s``, ``1 h 52 min``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"


def time_left(done: Sequence[float], n: int) -> float | None:
    """Seconds left of ``n`` entries when those finished took ``done`` seconds each: their mean
    times the entries not finished; ``None`` before the first has finished."""
    if not done:
        return None
    return sum(done) / len(done) * max(n - len(done), 0)


def entry_line(i: int, n: int, name: str, event: str, elapsed: float, done: Sequence[float]) -> str:
    """The progress line of entry ``i`` (1-based) of ``n``, named ``name``, at ``event``
    (``"starting"``, ``"scored in 8 min 02 s"``...), ``elapsed`` seconds into the job, with the
    finished entries' seconds ``done`` (:func:`time_left`)."""
    left = time_left(done, n)
    eta = "estimating" if left is None else f"~{duration(left)}"
    return f"entry {i} of {n} ({name}): {event}; elapsed {duration(elapsed)}, left {eta}"
