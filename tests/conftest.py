from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

try:  # CI runs the property tests derandomised, so a new random find cannot turn it red unseen
    import os

    from hypothesis import settings

    # no per-example deadline: a loaded CI machine can take longer than 200 ms on one example
    settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis ships with the dev extra
    pass
SHARED_BW = ROOT.parent / "shared" / "data" / "bandwidth" / "train"


@pytest.fixture(scope="session")
def shared_bw() -> Path:
    """The real Pensieve traces in ../shared (CI has them); skipped where absent."""
    if not SHARED_BW.is_dir():
        pytest.skip(f"{SHARED_BW} not present")
    return SHARED_BW


def auroc(scores, labels) -> float:
    """Rank AUROC (Mann-Whitney U / n_pos n_neg) with ties averaged."""
    import numpy as np

    s = np.asarray(scores, float)
    y = np.asarray(labels) > 0.5
    order = s.argsort()
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    for v in np.unique(s):  # average ties
        m = s == v
        ranks[m] = ranks[m].mean()
    n_pos, n_neg = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight VLM written by ``mllm-offload tiny-model`` (the real CLI path)."""
    pytest.importorskip("transformers")
    from mllm_offload.cli import main

    out = tmp_path_factory.mktemp("models") / "tiny"
    assert main(["tiny-model", "--out", str(out), "--seed", "0"]) == 0
    return out
