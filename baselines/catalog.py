"""Every baseline generator the main job runs, by name: the statistics tier's
(``baselines.statistics_generators``, the ranked section) first, then the rows tier's and the
reference lines (``baselines.generators``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from baselines.generators import GENERATORS as ROWS_GENERATORS
from baselines.statistics_generators import STATISTICS_GENERATORS

GENERATORS: dict[str, Callable[[], Any]] = {**STATISTICS_GENERATORS, **ROWS_GENERATORS}
"""Statistics tier first (``stats_*``), then ``baselines.generators.GENERATORS`` in its order."""
