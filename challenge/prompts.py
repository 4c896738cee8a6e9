"""Prompt sources and fixed-length token windows.

A :class:`PromptSpec` names where text comes from:

- ``"pydoc"``: the English prose of the stdlib ``pydoc_data.topics`` (~465k characters, on every
  machine);
- ``"template:<family>"``: a templated family of :data:`TEMPLATE_FAMILIES` (labelled prompts);
- ``"textfile:<path>"``: local text (a file, a directory of ``*.txt`` or a glob), read through
  ``datasets.load_dataset("text", ..., sample_by="paragraph")``;
- ``"hf:<dataset id>"``: a hub dataset, streamed with ``datasets.load_dataset(..., streaming=True)``.

Prose is tokenised per text (paragraph / topic / row) without special tokens and cut into
non-overlapping windows starting at each text's beginning (remainders are dropped); with
``prepend_bos`` each window is ``[bos] + (n_tokens - 1)`` text tokens, so windows always have
exactly ``n_tokens`` tokens. Identical windows are dropped (first kept) and the rest shuffled.
"""

from __future__ import annotations

import glob
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Int64

from challenge.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class PromptSpec:
    """Where prompts come from and how they are cut (see the module docstring)."""

    source: str = "pydoc"
    """``pydoc``, ``template:<family>``, ``textfile:<path>`` or ``hf:<dataset id>``."""
    hf_split: str = "train"
    """Hub datasets: the split streamed."""
    hf_text_field: str = "text"
    """Hub datasets: the column holding the text."""
    hf_revision: str | None = None
    """Hub datasets: the pinned revision (``None``: the default branch)."""
    n_tokens: int | None = 10
    """Tokens per window (templates: ``None`` keeps the modal prompt length)."""
    prepend_bos: bool = False
    """Start every window with the tokenizer's BOS token."""
    max_chars: int | None = None
    """Stop reading text after this many characters (``None``: all)."""

    def __post_init__(self) -> None:
        from challenge import checks

        for name in ("source", "hf_split", "hf_text_field"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(
                    f"must be a non-empty string, got {getattr(self, name)!r}", field=name
                )
        if self.n_tokens is not None:
            checks.integer(self.n_tokens, "n_tokens", minimum=1 + bool(self.prepend_bos))
        checks.boolean(self.prepend_bos, "prepend_bos")
        if self.max_chars is not None:
            checks.integer(self.max_chars, "max_chars", minimum=1)


@dataclass(frozen=True)
class TemplateFamily:
    """A template with ``{slot}`` fillers; each slot's values come in named groups.

    Every prompt is labelled with each slot's value, ``<slot>_group`` and, through ``derived``
    (label -> {group: value}), further labels of a group (e.g. ``sentiment``).
    """

    template: str
    slots: dict[str, dict[str, tuple[str, ...]]]
    derived: dict[str, dict[str, str]] = field(default_factory=dict)


def _g(**groups: str) -> dict[str, tuple[str, ...]]:
    return {g: tuple(words.split()) for g, words in groups.items()}


_POSITIVE = dict.fromkeys(("kind", "funny", "brave", "smart"), "positive")
TEMPLATE_FAMILIES: dict[str, TemplateFamily] = {
    "person_adjective": TemplateFamily(
        "My {relation} is a very {adjective} person, and everyone says that",
        {
            "relation": _g(family="mother father sister brother aunt uncle",
                           other="friend neighbour teacher boss"),
            "adjective": _g(
                kind="kind generous caring gentle friendly",
                cruel="cruel selfish rude mean nasty",
                funny="funny witty cheerful playful hilarious",
                lazy="lazy sloppy careless idle sluggish",
                brave="brave bold fearless courageous daring",
                smart="smart clever brilliant wise intelligent",
            ),
        },
        {"sentiment": _POSITIVE | dict.fromkeys(("cruel", "lazy"), "negative")},
    ),
    "object_color": TemplateFamily(
        "The {object} on the table was painted {color}, and when I looked at it I saw",
        {
            "object": _g(furniture="chair table shelf desk stool", small="cup box vase bowl bottle"),
            "color": _g(warm="red orange yellow pink", cool="blue green purple teal",
                        neutral="black white gray brown"),
        },
    ),
    "city_weather": TemplateFamily(
        "In {city} the weather today is {weather}, so everyone decided to",
        {
            "city": _g(europe="Paris London Berlin Madrid Rome",
                       america="Boston Chicago Toronto Denver Miami",
                       asia="Tokyo Seoul Delhi Bangkok Beijing"),
            "weather": _g(warm="sunny hot warm dry", cold="rainy cold snowy windy stormy"),
        },
    ),
}  # fmt: skip


def template_prompts(family: str) -> list[dict[str, str]]:
    """All prompts of a family: ``dict(text=..., <slot>=..., <slot>_group=..., <derived>=...)``."""
    if family not in TEMPLATE_FAMILIES:
        raise ConfigError(
            f"unknown template family {family!r} (known: {sorted(TEMPLATE_FAMILIES)})",
            field="source",
        )
    fam = TEMPLATE_FAMILIES[family]
    names = list(fam.slots)
    choices = [[(g, v) for g, vs in fam.slots[n].items() for v in vs] for n in names]
    out = []
    for combo in itertools.product(*choices):
        row: dict[str, str] = {
            "text": fam.template.format(**{n: v for n, (_, v) in zip(names, combo, strict=True)})
        }
        for n, (g, v) in zip(names, combo, strict=True):
            row[n], row[f"{n}_group"] = v, g
            for label, by_group in fam.derived.items():
                if g in by_group:
                    row[label] = by_group[g]
        out.append(row)
    return out


def _text_files(path: str) -> list[str]:
    p = Path(path).expanduser()
    if any(c in path for c in "*?["):
        files = sorted(glob.glob(str(p), recursive=True))
    elif p.is_dir():
        files = sorted(str(f) for f in p.rglob("*.txt"))
    else:
        files = [str(p)] if p.is_file() else []
    if not files:
        raise ConfigError("no text file found at this path", file=path, field="source")
    return files


def _raw_texts(spec: PromptSpec) -> Iterator[str]:
    kind, _, arg = spec.source.partition(":")
    if spec.source == "pydoc":
        from pydoc_data.topics import topics

        yield from (topics[k] for k in sorted(topics))
    elif kind == "template":
        yield from (p["text"] for p in template_prompts(arg))
    elif kind == "textfile":
        import datasets

        ds = datasets.load_dataset(
            "text",
            data_files=_text_files(arg),
            split="train",
            streaming=True,
            sample_by="paragraph",
        )
        yield from (row["text"] for row in ds)
    elif kind == "hf" and arg:
        import datasets

        try:
            ds = datasets.load_dataset(
                arg, split=spec.hf_split, revision=spec.hf_revision, streaming=True
            )
            rows = iter(ds)
            first = next(rows, None)
        except Exception as e:  # offline, unknown id, bad split or revision
            raise ConfigError(
                f"cannot stream hub dataset {arg!r} (split {spec.hf_split!r}, revision "
                f"{spec.hf_revision!r}): {type(e).__name__}: {e}; without hub access use "
                "source='pydoc' or 'textfile:<path>'",
                field="source",
            ) from e
        for row in itertools.chain([first] if first is not None else [], rows):
            if spec.hf_text_field not in row:
                raise ConfigError(
                    f"hub dataset {arg!r} has no column {spec.hf_text_field!r} (columns: "
                    f"{sorted(row)})",
                    field="hf_text_field",
                )
            yield row[spec.hf_text_field]
    else:
        raise ConfigError(
            f"unknown source {spec.source!r}; expected 'pydoc', 'template:<family>', "
            "'textfile:<path>' or 'hf:<dataset id>'",
            field="source",
        )


def iter_texts(spec: PromptSpec) -> Iterator[str]:
    """Texts of ``spec.source`` in a fixed order; empty texts skipped, cut at ``max_chars``."""
    left = spec.max_chars
    for text in _raw_texts(spec):
        if not text or not text.strip():
            continue
        if left is not None:
            if left <= 0:
                return
            text, left = text[:left], left - len(text)
        yield text


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _bos(tokenizer: Any) -> list[int]:
    if tokenizer.bos_token_id is None:
        raise ConfigError(
            "prepend_bos is set but the tokenizer has no BOS token", field="prepend_bos"
        )
    return [int(tokenizer.bos_token_id)]


def _dedupe_shuffle(rows: np.ndarray, seed: int) -> np.ndarray:
    """Indices of the first occurrence of each distinct row, in a seeded random order."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(rows, axis=0, return_index=True)
    first = np.sort(first)
    return first[np.random.default_rng(seed).permutation(len(first))]


def token_windows(
    texts: Iterable[str],
    tokenizer: Any,
    n_tokens: int,
    *,
    prepend_bos: bool = False,
    max_windows: int | None = None,
    seed: int = 0,
) -> Int64[np.ndarray, "N n_tokens"]:
    """Distinct non-overlapping ``n_tokens`` windows of prose, shuffled with ``seed``.

    With ``max_windows``, reading stops once that many distinct windows are collected (so a
    streamed hub dataset is read only as far as needed).
    """
    if n_tokens is None or n_tokens < 1 or (prepend_bos and n_tokens < 2):
        raise ConfigError(
            f"n_tokens must be >= {1 + prepend_bos}, got {n_tokens}", field="n_tokens"
        )
    bos = _bos(tokenizer) if prepend_bos else []
    step = n_tokens - len(bos)
    seen: set[tuple[int, ...]] = set()
    rows: list[tuple[int, ...]] = []
    it = iter(texts)
    while max_windows is None or len(rows) < max_windows:
        batch = list(itertools.islice(it, 64))
        if not batch:
            break
        for ids in _tokenize(tokenizer, batch):
            for i in range(0, len(ids) - step + 1, step):
                row = tuple(bos + ids[i : i + step])
                if row not in seen:
                    seen.add(row)
                    rows.append(row)
    rows = rows[:max_windows] if max_windows is not None else rows
    arr = np.array(rows, dtype=np.int64).reshape(len(rows), n_tokens)
    return arr[np.random.default_rng(seed).permutation(len(arr))]


@dataclass
class TemplateWindows:
    """One window per kept prompt, with per-row labels (``text`` and the family's fillers)."""

    tokens: Int64[np.ndarray, "N T"]
    labels: dict[str, np.ndarray]
    n_dropped: int


def template_windows(
    family: str,
    tokenizer: Any,
    n_tokens: int | None = None,
    *,
    prepend_bos: bool = False,
    seed: int = 0,
) -> TemplateWindows:
    """Tokenise a family's prompts whole; keep those of length ``n_tokens`` (None: the modal
    length, ties to the shorter), drop duplicates, shuffle with ``seed``."""
    prompts = template_prompts(family)
    bos = _bos(tokenizer) if prepend_bos else []
    ids = [bos + t for t in _tokenize(tokenizer, [p["text"] for p in prompts])]
    counts = Counter(len(t) for t in ids)
    if n_tokens is None:
        n_tokens = min(counts, key=lambda n: (-counts[n], n))
    elif n_tokens not in counts:
        raise ConfigError(
            f"no prompt of family {family!r} has {n_tokens} tokens (lengths: {dict(counts)}); "
            "use n_tokens=None for the modal length",
            field="n_tokens",
        )
    keep = [i for i, t in enumerate(ids) if len(t) == n_tokens]
    n_dropped = len(prompts) - len(keep)
    if n_dropped:
        logger.info(f"template {family}: dropped {n_dropped} of {len(prompts)} prompts "
                    f"not {n_tokens} tokens long")  # fmt: skip
    tokens = np.array([ids[i] for i in keep], dtype=np.int64).reshape(len(keep), n_tokens)
    order = _dedupe_shuffle(tokens, seed)
    keys = prompts[0].keys()
    labels = {k: np.array([prompts[keep[j]][k] for j in order]) for k in keys}
    return TemplateWindows(tokens[order], labels, n_dropped)


def split_indices(n: int, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint row indices into ``n`` rows, one block per split in ``sizes`` order."""
    for name, size in sizes.items():
        if int(size) < 0:
            raise ConfigError(f"split size must be >= 0, got {size}", field=f"sizes.{name}")
    total = sum(int(s) for s in sizes.values())
    if total > n:
        asked = ", ".join(f"{k}={v}" for k, v in sizes.items())
        last = next(reversed(sizes))
        raise ConfigError(
            f"splits ask for {total} windows ({asked}) but only {n} distinct windows are available",
            field=f"sizes.{last}",
        )
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *(int(s) for s in sizes.values())])
    return {k: perm[bounds[i] : bounds[i + 1]] for i, k in enumerate(sizes)}


def split_windows(
    tokens: Int64[np.ndarray, "N T"], sizes: dict[str, int], seed: int
) -> dict[str, np.ndarray]:
    """Disjoint seeded splits of ``tokens`` (distinct rows give row-disjoint splits)."""
    return {k: tokens[idx] for k, idx in split_indices(len(tokens), sizes, seed).items()}


def build_prompts(
    spec: PromptSpec, tokenizer: Any, sizes: dict[str, int], seed: int
) -> dict[str, np.ndarray]:
    """``spec`` -> windows -> disjoint splits. A streamed hub source is read only until
    ``sum(sizes)`` distinct windows are found; local sources are read whole."""
    kind, _, arg = spec.source.partition(":")
    kw: dict[str, Any] = dict(prepend_bos=spec.prepend_bos, seed=seed)
    if kind == "template":
        tokens = template_windows(arg, tokenizer, spec.n_tokens, **kw).tokens
    else:
        limit = sum(int(s) for s in sizes.values()) if kind == "hf" else None
        tokens = token_windows(iter_texts(spec), tokenizer, spec.n_tokens, max_windows=limit, **kw)
    return split_windows(tokens, sizes, seed)
