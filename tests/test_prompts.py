"""Prompt sources, token windows and splits, with the embedded model's real tokenizer."""

import os
import time

import numpy as np
import pytest

from challenge.errors import ConfigError
from challenge.prompts import (
    TEMPLATE_FAMILIES,
    PromptSpec,
    build_prompts,
    iter_texts,
    split_windows,
    template_prompts,
    template_windows,
    token_windows,
)


@pytest.fixture(scope="module")
def tok(smollm):
    return smollm.tokenizer


@pytest.fixture(scope="module")
def pydoc_windows(tok):
    return token_windows(iter_texts(PromptSpec()), tok, 10, seed=0)


def _rows(a: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(r) for r in a.tolist()}


def test_pydoc_windows_are_fixed_length_distinct_int64(pydoc_windows, tok):
    w = pydoc_windows
    assert w.dtype == np.int64 and w.ndim == 2 and w.shape[1] == 10
    assert len(w) > 5000  # ~465k characters of prose
    assert len(_rows(w)) == len(w)
    assert tok.decode(w[0].tolist()).strip()  # real text


def test_windows_seeded(tok, pydoc_windows):
    texts = list(iter_texts(PromptSpec(max_chars=20_000)))
    assert sum(map(len, texts)) == 20_000
    a = token_windows(texts, tok, 8, seed=1)
    assert np.array_equal(a, token_windows(texts, tok, 8, seed=1))
    b = token_windows(texts, tok, 8, seed=2)
    assert not np.array_equal(a, b) and _rows(a) == _rows(b)


def test_prepend_bos_and_max_windows(tok):
    texts = list(iter_texts(PromptSpec(max_chars=20_000)))
    w = token_windows(texts, tok, 6, prepend_bos=True, max_windows=50)
    assert w.shape == (50, 6) and (w[:, 0] == tok.bos_token_id).all()
    assert (w[:, 1:] != tok.bos_token_id).all()
    with pytest.raises(ConfigError, match="n_tokens"):
        token_windows(texts, tok, 1, prepend_bos=True)


def test_splits_disjoint_sized_and_deterministic(pydoc_windows):
    sizes = {"public": 1000, "heldout": 300, "context": 200}
    s = split_windows(pydoc_windows, sizes, seed=0)
    assert {k: len(v) for k, v in s.items()} == sizes
    names = list(s)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not _rows(s[a]) & _rows(s[b]), f"{a} and {b} share a row"
    again = split_windows(pydoc_windows, sizes, seed=0)
    assert all(np.array_equal(s[k], again[k]) for k in sizes)
    other = split_windows(pydoc_windows, sizes, seed=1)
    assert not np.array_equal(s["public"], other["public"])
    with pytest.raises(ConfigError, match="field sizes.context.*only"):
        split_windows(pydoc_windows[:100], {"public": 90, "context": 20}, seed=0)


def test_build_prompts_pydoc(tok):
    spec = PromptSpec(n_tokens=10, max_chars=50_000)
    s = build_prompts(spec, tok, {"a": 100, "b": 50}, seed=3)
    assert s["a"].shape == (100, 10) and s["b"].shape == (50, 10)
    assert not _rows(s["a"]) & _rows(s["b"])
    assert np.array_equal(s["a"], build_prompts(spec, tok, {"a": 100, "b": 50}, seed=3)["a"])


@pytest.mark.parametrize("family", sorted(TEMPLATE_FAMILIES))
def test_template_families_are_labelled(family):
    prompts = template_prompts(family)
    assert len(prompts) >= 100 and len({p["text"] for p in prompts}) == len(prompts)
    for slot in TEMPLATE_FAMILIES[family].slots:
        assert all(p[slot] in p["text"] and f"{slot}_group" in p for p in prompts)


def test_person_adjective_labels_and_windows(tok):
    prompts = template_prompts("person_adjective")
    adjectives = {p["adjective"] for p in prompts}
    assert len(adjectives) >= 30 and {"kind", "cruel", "funny", "lazy", "brave"} <= adjectives
    assert len({p["relation"] for p in prompts}) >= 10
    assert {p["sentiment"] for p in prompts} == {"positive", "negative"}

    tw = template_windows("person_adjective", tok, None, seed=0)
    n = tw.tokens.shape[1]
    assert len(tw.tokens) + tw.n_dropped == len(prompts) and tw.n_dropped < len(prompts) // 4
    assert len(_rows(tw.tokens)) == len(tw.tokens)
    for row, text, adj in zip(tw.tokens, tw.labels["text"], tw.labels["adjective"], strict=True):
        assert tok.decode(row.tolist()) == text and adj in text
    assert len(tok(str(tw.labels["text"][0]), add_special_tokens=False)["input_ids"]) == n
    again = template_windows("person_adjective", tok, None, seed=0)
    assert np.array_equal(tw.tokens, again.tokens)
    with pytest.raises(ConfigError, match="n_tokens"):
        template_windows("person_adjective", tok, 3)


def test_build_prompts_template_modal_length_with_bos(tok):
    spec = PromptSpec(source="template:city_weather", n_tokens=None, prepend_bos=True)
    s = build_prompts(spec, tok, {"train": 60, "test": 30}, seed=0)
    assert s["train"].shape[0] == 60 and (s["train"][:, 0] == tok.bos_token_id).all()
    assert not _rows(s["train"]) & _rows(s["test"])
    with pytest.raises(ConfigError, match="unknown template family"):
        build_prompts(PromptSpec(source="template:nope"), tok, {"a": 1}, seed=0)


def test_textfile_source(tok, tmp_path):
    words = "river stone cloud garden window letter music candle forest harbor".split()
    paras = [" ".join(f"The {w} number {i} was seen near {v}." for w in words) for i, v in
             enumerate(["home", "school", "town"])]  # fmt: skip
    (tmp_path / "a.txt").write_text("\n\n".join(paras) + "\n\nShort one.\n")
    spec = PromptSpec(source=f"textfile:{tmp_path / 'a.txt'}", n_tokens=5)
    texts = list(iter_texts(spec))
    assert len(texts) == 4 and texts[0].startswith("The river number 0")
    w = token_windows(texts, tok, 5)
    assert w.shape[1] == 5 and len(_rows(w)) == len(w) >= 20
    assert all(tok.decode(r.tolist()) in " ".join(paras) for r in w)
    s = build_prompts(PromptSpec(source=f"textfile:{tmp_path}", n_tokens=5), tok, {"a": 5}, 0)
    assert s["a"].shape == (5, 5)
    with pytest.raises(ConfigError, match="no text file"):
        list(iter_texts(PromptSpec(source=f"textfile:{tmp_path / 'missing.txt'}")))


def test_hub_source_offline_fails_clearly(tok, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    t = time.time()
    with pytest.raises(ConfigError, match="cannot stream hub dataset 'NeelNanda/pile-10k'"):
        build_prompts(PromptSpec(source="hf:NeelNanda/pile-10k"), tok, {"a": 10}, seed=0)
    assert time.time() - t < 30


def test_unknown_source_is_refused():
    with pytest.raises(ConfigError, match="field source.*unknown source"):
        list(iter_texts(PromptSpec(source="s3:bucket")))


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"source": ""}, "source"),
        ({"n_tokens": 0}, "n_tokens"),
        ({"n_tokens": 1, "prepend_bos": True}, "n_tokens"),
        ({"prepend_bos": "yes"}, "prepend_bos"),
        ({"max_chars": 0}, "max_chars"),
    ],
)
def test_prompt_spec_refuses_bad_values(kw, field):
    with pytest.raises(ConfigError, match=f"field {field}"):
        PromptSpec(**kw)
