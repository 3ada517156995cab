"""The documentation cannot drift (issue 31): the site builds with ``mkdocs build --strict`` (a broken link, a missing
page or a docstring that fails to render fails), every Python block in the README and docs/ runs, and every
``hamburger ...`` line of a shell block parses with the CLI's own parser.

A Python block that needs data or minutes is preceded by ``<!-- skip: the reason -->`` and is only compiled."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(?:<!-- skip: (?P<skip>[^>]*) -->\s*\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.S)


def _blocks(lang: str):
    for page in PAGES:
        for m in BLOCK.finditer(page.read_text()):
            if m.group("lang") == lang:
                line = page.read_text()[: m.start("code")].count("\n") + 1
                yield pytest.param(m.group("code"), m.group("skip"), id=f"{page.relative_to(ROOT)}:{line}")


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None, reason="docs extra")
def test_the_site_builds_strict_and_offline(tmp_path):
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "api" / "functional" / "index.html").stat().st_size > 10_000  # the reference rendered


@pytest.mark.parametrize("code, skip", list(_blocks("python")))
def test_python_examples_run(code, skip, tmp_path, monkeypatch):
    compiled = compile(code, "<docs>", "exec")
    if skip:
        pytest.skip(skip)
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    exec(compiled, {"__name__": "__docs__"})


def _commands():
    for code, _skip in (p.values[:2] for p in _blocks("bash")):
        text = code.replace("\\\n", " ")
        for line in text.splitlines():
            for part in re.split(r"&&|;|\|\|", line.split(" #")[0]):
                part = re.sub(r"^(\w+=\S+\s+)+", "", part.strip())  # OMP_NUM_THREADS=1 hamburger ...
                part = re.sub(r"^.*-m hamburger\.cli ", "hamburger ", part)  # torchrun / python -m hamburger.cli
                if part.startswith("hamburger "):
                    yield part


def test_shell_examples_parse_with_the_cli():
    from hamburger.cli import build_parser

    parser = build_parser()
    commands = list(_commands())
    assert len(commands) >= 14
    bad = []
    for command in commands:
        argv = ["cpu" if a.startswith("cuda") else a for a in shlex.split(command)[1:]]  # no GPU here
        try:
            parser.parse_args(argv)
        except SystemExit:
            bad.append(command)
    assert not bad, "these documented commands do not parse:\n" + "\n".join(bad)
