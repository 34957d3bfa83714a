"""The docs stay true: every code block marked ``<!-- runnable -->`` in README.md and docs/ runs.

Blocks of one page run in order in one fresh folder (so a later block may use what an earlier one
wrote), with ``train.py``, ``evaluate.py``, ``examples/`` and ``benchmarks/`` beside them and the package's
commands on PATH. A shell block runs under ``bash -euo pipefail``: any failing command (a renamed
flag exits 2) fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^<!-- runnable -->\n```(bash|python)\n(.*?)^```", re.S | re.M)


def runnable_blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of every block marked runnable on ``page``, in order."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(page.read_text(encoding="utf-8"))]


def run_block(lang: str, code: str, cwd: Path, timeout_s: float = 600.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if lang == "bash":
        cmd = ["bash", "-euo", "pipefail", "-c", code.replace("python ", f"{sys.executable} ")]
    else:
        script = cwd / "block.py"
        script.write_text(code, encoding="utf-8")
        cmd = [sys.executable, str(script)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)


def _workdir(tmp_path: Path) -> Path:
    for name in ("train.py", "evaluate.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("examples", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_the_docs_mark_their_runnable_blocks():
    counts = {p.name: len(runnable_blocks(p)) for p in PAGES}
    assert counts["README.md"] >= 2 and sum(counts.values()) >= 9, counts


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=lambda p: p.name)
def test_runnable_blocks_run(page, tmp_path):
    cwd = _workdir(tmp_path)
    for k, (lang, code) in enumerate(runnable_blocks(page)):
        r = run_block(lang, code, cwd)
        assert r.returncode == 0, f"{page.name} block {k + 1} ({lang}) failed with exit {r.returncode}:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"


def test_a_stale_flag_fails(tmp_path):
    """What the docs test catches: a block with a flag that no longer exists."""
    r = run_block("bash", "python evaluate.py --profile msao-paper --requets 100\n", _workdir(tmp_path), timeout_s=120)
    assert r.returncode == 2 and "--requets" in r.stderr
