"""The library never imports the command line."""

import ast
from pathlib import Path

import baselines
import challenge

ROOT = Path(challenge.__file__).parent.parent
LIBRARY = (Path(challenge.__file__).parent, Path(baselines.__file__).parent)
CLI = ROOT / "challenge" / "cli"
OLD_CLI = (
    "challenge/cli.py",
    "challenge/challenge_cli.py",
    "challenge/studies/cli.py",
    "challenge/interactions/cli.py",
    "baselines/cli.py",
)


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """Every module (and ``module.name``) that ``path`` imports, relative imports resolved."""
    package = list(path.relative_to(root).parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out |= {module} | {f"{module}.{a.name}" for a in node.names}
    return out


def imports_cli(path: Path, root: Path = ROOT) -> list[str]:
    return sorted(
        m for m in imported(path, root) if m == "challenge.cli" or m.startswith("challenge.cli.")
    )


def test_the_check_sees_every_form_of_import(tmp_path):
    pkg = tmp_path / "challenge" / "studies"
    pkg.mkdir(parents=True)
    for src in (
        "import challenge.cli",
        "from challenge.cli import main",
        "from challenge import cli",
        "def f():\n    from challenge.cli.tracks import build",
        "from .. import cli",
        "from ..cli import main",
    ):
        (pkg / "m.py").write_text(src + "\n")
        assert imports_cli(pkg / "m.py", tmp_path), src
    (pkg / "m.py").write_text("from challenge import client\nfrom . import cli\n")
    assert not imports_cli(pkg / "m.py", tmp_path)  # challenge.studies.cli is not the CLI


def test_no_library_module_imports_the_cli():
    offenders = {
        str(p.relative_to(ROOT)): imports_cli(p)
        for lib in LIBRARY
        for p in lib.rglob("*.py")
        if CLI not in p.parents
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_old_cli_modules_are_gone():
    assert not [old for old in OLD_CLI if (ROOT / old).exists()]
