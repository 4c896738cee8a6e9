"""What a generator may touch, enforced, and the board category that follows from it.

A generator declares ``access``, a subset of :data:`ACCESS`:

- ``public``: the track's public split (activations and prompt tokens);
- ``sae``: the track's SAE, ready-made (the organiser trains it; ``plateau train-sae``);
- ``model``: the model itself (a forward pass: the activations are the model's by construction);
- ``heldout``: the real splits that are not public (held-out, context);
- ``statistics``: the track's statistics artifact (aggregates over >= k public rows each,
  ``challenge.statistics``), never a row.

:func:`guarded` hands a generator only what it declared: a :class:`TrackView` whose other splits
raise :class:`AccessError`, and :class:`NoModel` in place of the model unless it declared
``model``; so an in-repo generator that declares ``public``/``sae`` and reads the held-out
split or runs the model fails instead of being ranked. The category comes from that enforced
declaration (:func:`category_of`), never from the free-text ``uses`` of ``submission.json``:

- ``statistics``: the statistics tier, the main ranked section: ``access`` within
  ``statistics``, ``sae`` (and naming ``statistics``). Its generators never see a real row:
  ``fit(stats, sae)`` receives the artifact and the SAE it was built with
  (:func:`challenge.statistics.published.statistics_inputs`), not the track;
- ``synthetic``: the rows tier: model-free (``access`` within ``public``, ``sae``,
  ``statistics``) and not a reconstruction of real rows. Its generators see public rows, so a
  generator can move them inside their plateaus (docs/integrity.md): listed, not ranked;
- ``reference``: touched the model or non-public real rows, or reproduces real rows by
  construction (``reference = True``, e.g. SAE reconstructions of public rows): drawn as a
  reference line, never ranked;
- ``unverified``: activations whose making nobody checked (``plateau submit`` of a folder):
  listed in their own section, not ranked among verified entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from challenge.errors import ChallengeError
from challenge.store import SAE_FOLDER
from challenge.track import TrackHalves, TrackLike

ACCESS = ("public", "sae", "model", "heldout", "statistics")
STATISTICS_ACCESS = frozenset({"statistics", "sae"})
SYNTHETIC_ACCESS = frozenset({"public", "sae", "statistics"})
CATEGORIES = ("statistics", "synthetic", "reference", "unverified")
VERIFIED_BY = ("sandbox", "in_repo", "none")


class AccessError(ChallengeError):
    """A generator touched something its declared access does not include."""


def check_access(access: Any, who: str) -> tuple[str, ...]:
    """``access`` as a tuple of known names (``ChallengeError`` naming ``who`` otherwise)."""
    if isinstance(access, str) or not all(isinstance(a, str) for a in access or ()):
        raise ChallengeError(f"access must be a list of {list(ACCESS)}", field=f"{who}.access")
    bad = [a for a in access if a not in ACCESS]
    if bad or not access:
        raise ChallengeError(
            f"unknown or empty access {list(access)}; allowed {list(ACCESS)}",
            field=f"{who}.access",
        )
    return tuple(access)


def category_of(access: Any, reference: bool = False) -> str:
    """``statistics`` when ``access`` names the statistics artifact and stays within it and the
    SAE; ``synthetic`` when it stays within the public split, the artifact and the SAE and the
    generator is not a reconstruction of real rows; else ``reference``."""
    if reference or not set(access) <= SYNTHETIC_ACCESS:
        return "reference"
    if is_statistics_tier(access):
        return "statistics"
    return "synthetic"


def is_statistics_tier(access: Any) -> bool:
    """Whether ``access`` is the statistics tier's (names ``statistics``, within it and ``sae``)."""
    return "statistics" in access and set(access) <= STATISTICS_ACCESS


def entry_access(
    category: str, verified_by: str, access: Any, code_sha256: str | None = None
) -> dict[str, Any]:
    """The ``access`` record the organiser's tools put in a score record's ``submission``."""
    if category not in CATEGORIES:
        raise ChallengeError(f"unknown category {category!r}", field="access.category")
    if verified_by not in VERIFIED_BY:
        raise ChallengeError(f"unknown verifier {verified_by!r}", field="access.verified_by")
    rec: dict[str, Any] = {
        "category": category,
        "verified_by": verified_by,
        "access": list(access),
    }
    if code_sha256 is not None:
        rec["code_sha256"] = code_sha256
    return rec


def generator_access(generator: Any) -> dict[str, Any]:
    """The ``access`` record of an in-repo generator run by the organiser under
    :func:`guarded`: its declared (and enforced) access and the category that follows."""
    name = getattr(generator, "name", type(generator).__name__)
    access = check_access(getattr(generator, "access", None), name)
    cat = category_of(access, bool(getattr(generator, "reference", False)))
    return entry_access(cat, "in_repo", access)


class TrackView(TrackHalves):
    """A track as a generator may see it: ``spec``, ``meta``, ``d_model``, ``units`` and the
    splits in ``allowed``; any other split raises :class:`AccessError`. No ``path`` (so no
    route to the track's files)."""

    def __init__(self, track: TrackLike, allowed: tuple[str, ...], who: str):
        self._track, self._allowed, self._who = track, tuple(allowed), who
        self.spec, self.meta, self.path = track.spec, track.meta, None
        # the SAEs published with the track (what ``track_sae`` loads), not the track's files
        self.sae_root = getattr(track, "sae_root", None) or (
            Path(track.path) / SAE_FOLDER if getattr(track, "path", None) else None
        )
        self.splits = {s: v for s, v in track.splits.items() if s in self._allowed}

    def _check(self, split: str) -> None:
        if split not in self._allowed:
            raise AccessError(
                f"generator {self._who!r} read the {split!r} split, which its declared access "
                f"does not include (it sees {list(self._allowed)})",
                field="access",
            )

    def acts(self, split: str) -> torch.Tensor:
        self._check(split)
        return self._track.acts(split)

    def tokens(self, split: str) -> torch.Tensor:
        self._check(split)
        return self._track.tokens(split)

    @property
    def d_model(self) -> int:
        return self._track.d_model

    @property
    def units(self) -> dict[str, float]:
        return self._track.units

    @property
    def data_sha256(self) -> str | None:
        return self._track.data_sha256

    def engine(self, lm: Any, **overrides) -> Any:
        return self._track.engine(lm, **overrides)


class NoModel:
    """Stands in for the model of a generator that did not declare ``model``: any use raises
    :class:`AccessError` (a synthetic generator gets the track's SAE ready-made: train it
    first with ``plateau train-sae``)."""

    def __init__(self, who: str):
        object.__setattr__(self, "_who", who)

    def __getattr__(self, attr: str) -> Any:
        raise AccessError(
            f"generator {self._who!r} used the model (.{attr}), which its declared access does "
            "not include (a synthetic generator gets the track's SAE ready-made: run "
            "`plateau train-sae <track>` first)",
            field="access",
        )


def guarded(track: TrackLike, lm: Any, generator: Any) -> tuple[Any, Any]:
    """What a generator's ``fit`` receives, from its declared ``access``: for the statistics
    tier the track's statistics artifact and its SAE (no track, no model); otherwise the track
    view and the model (or :class:`NoModel`)."""
    name = getattr(generator, "name", type(generator).__name__)
    access = check_access(getattr(generator, "access", None), name)
    if is_statistics_tier(access):
        from challenge.statistics.published import statistics_inputs

        return statistics_inputs(track, with_sae="sae" in access)
    splits = ("public",) + (("heldout", "context") if "heldout" in access else ())
    return TrackView(track, splits, name), (lm if "model" in access else NoModel(name))
