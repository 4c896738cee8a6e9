"""The statistics tier's artifact: aggregate statistics of a track's public split, each over
>= k rows (``artifact``), and the reconstruction attacks that measure what it gives away
(``attack``). See docs/integrity.md, "The statistics tier and its artifact"."""

from challenge.statistics.artifact import (
    DEFAULT_K,
    FORMAT,
    StatisticsConfig,
    TrackStatistics,
    build_statistics,
    card,
    check_k,
    load_statistics,
    save_statistics,
    verify_statistics,
)

__all__ = [
    "DEFAULT_K",
    "FORMAT",
    "StatisticsConfig",
    "TrackStatistics",
    "build_statistics",
    "card",
    "check_k",
    "load_statistics",
    "save_statistics",
    "verify_statistics",
]
