"""Every ``plateau ...`` line in the fenced code blocks of README.md and docs/*.md parses: the
documented commands and flags exist (the commands are replaced by stubs; nothing runs)."""

import functools
import re
import shlex
from pathlib import Path

import pytest
import tyro

from challenge.cli import COMMANDS
from challenge.cli.protocols import P1Command, P2Command, P3Command

ROOT = Path(__file__).parents[2]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def documented() -> list[tuple[str, str]]:
    out = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in FENCE.findall(doc.read_text()):
            for line in block.splitlines():
                if line.startswith("plateau "):
                    out.append((doc.name, line.split("  #")[0].split(" # ")[0].strip()))
    return out


def parse(args: list[str]):
    """Parse ``args`` as ``plateau`` would and return what the command would be called with."""

    def stub(fn):
        @functools.wraps(fn)
        def called(*a, **k):
            return a, k

        return called

    return tyro.extras.subcommand_cli_from_dict(
        {name: stub(fn) for name, fn in COMMANDS.items()},
        args=args,
        prog="plateau",
        config=(tyro.conf.OmitArgPrefixes,),
    )


def test_the_docs_show_commands():
    names = {shlex.split(line)[1] for _, line in documented()}
    assert {"protocol", "main", "find-features", "interactions-circuit"} <= names


@pytest.mark.parametrize("doc, line", documented())
def test_documented_command_parses(doc, line):
    args = shlex.split(line)[1:]
    if "--help" in args:
        with pytest.raises(SystemExit) as e:
            parse(args)
        assert e.value.code == 0
    else:
        parse(args)


def test_protocol_sizes_are_each_protocols_own():
    """``--n`` is gone; the defaults are the command's as before (200 curves, pairs, bases)."""
    assert [parse(["protocol", p])[1]["cfg"] for p in ("p1", "p2", "p3")] == [
        P1Command(),
        P2Command(),
        P3Command(),
    ]
    assert (P1Command().n_curves, P2Command().n_pairs, P3Command().n_base) == (200, 200, 200)
    cfg = parse(["protocol", "p2", "--n-pairs", "7"])[1]["cfg"]
    assert cfg.n_pairs == 7
    cfg = parse(["protocol", "p3", "--n-base", "5", "--units", "gpt2"])[1]["cfg"]
    assert (cfg.n_base, cfg.units) == (5, "gpt2")
    cfg = parse(["protocol", "p1", "--n-curves", "3", "--n-steps", "11"])[1]["cfg"]
    assert (cfg.n_curves, cfg.n_steps) == (3, 11)
    with pytest.raises(SystemExit):
        parse(["protocol", "p2", "--n", "7"])


DELIMITER = re.compile(r"\s*\|(\s*:?-+:?\s*\|)+\s*")


def table_cells(line: str) -> int:
    """Cells of a markdown table row (pipes in code spans and escaped pipes are text)."""
    line = re.sub(r"`[^`]*`", "x", line.strip()).replace("\\|", "x")
    return line.count("|") - 1


@pytest.mark.parametrize(
    "doc",
    [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *ROOT.glob("leaderboard/*/README.md"),
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_markdown_table_row_has_its_headers_cells(doc):
    """A table whose delimiter row has fewer cells than its header is not rendered as a table
    (GFM), and a row with more cells than the header loses them: a stray ``|`` in a cell."""
    lines, bad = doc.read_text().splitlines(), []
    for i, line in enumerate(lines[:-1]):
        if line.lstrip().startswith("|") and DELIMITER.fullmatch(lines[i + 1]):
            n = table_cells(line)
            j = i + 1
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                if table_cells(lines[j]) != n:
                    bad.append(f"line {j + 1}: {table_cells(lines[j])} cells, header {n}")
                j += 1
    assert not bad, bad
