"""The docs cannot drift from the code: every ``autoslim`` command the README and DESIGN.md show
parses with the real command-line parser, every ``python -m`` module they run exists, and every
project path they name is in the tree."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from app.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [path for path in (ROOT / "README.md", ROOT / "DESIGN.md") if path.is_file()]
FOLDERS = ("app", "engine", "models", "store", "worker", "bench", "tests", "migrations", ".ci")
PATH = re.compile(rf"(?<![\w/.-])((?:{'|'.join(re.escape(f) for f in FOLDERS)})/[\w/.-]*\w)")


def shell_lines(text: str) -> list[str]:
    """Commands of the fenced bash blocks, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def commands(prefix: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for line in shell_lines(doc.read_text()):
            for part in re.split(r"&&|;|\|", line):
                part = part.strip()
                if part.startswith(prefix):
                    found.append((doc.name, part))
    return found


@pytest.mark.parametrize("doc,command", commands("autoslim "), ids=lambda v: v if len(v) < 60 else v[:60])
def test_every_autoslim_command_in_the_docs_parses(doc, command):
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{doc}: `{command}` is rejected by the parser (exit {exit_.code})")


@pytest.mark.parametrize("doc,command", commands("python -m "), ids=lambda v: v if len(v) < 60 else v[:60])
def test_every_python_module_in_the_docs_exists(doc, command):
    module = shlex.split(command)[2]
    if module in ("pip", "pytest", "venv"):
        return
    assert importlib.util.find_spec(module) is not None, f"{doc}: `{command}` names no module {module!r}"


def test_every_project_path_in_the_docs_exists():
    missing = []
    for doc in DOCS:
        for path in set(PATH.findall(doc.read_text())):
            if not (ROOT / path.rstrip(".")).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, "paths named in the docs that do not exist: " + ", ".join(sorted(missing))


DOTTED = re.compile(r"`((?:models|engine|store|worker|app)(?:\.\w+)+)")


def resolves(name: str) -> bool:
    """True when ``name`` is a module, or an attribute (path) of the longest module prefix of it."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            value = importlib.import_module(module)
            for attr in parts[cut:]:
                if not hasattr(value, attr):
                    return False
                value = getattr(value, attr)
            return True
    return False


def current(text: str) -> str:
    """The docs without their "Renamed" section, whose left column names what no longer exists."""
    return re.sub(r"\n## Renamed.*?(?=\n## |\Z)", "", text, flags=re.S)


def test_every_module_and_name_the_docs_cite_exists():
    missing = [
        f"{doc.name}: {name}"
        for doc in DOCS
        for name in sorted(set(DOTTED.findall(current(doc.read_text()))))
        if not resolves(name)
    ]
    assert not missing, "dotted names in the docs that do not resolve: " + ", ".join(missing)
