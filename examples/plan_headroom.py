"""How many upload bytes could *any* policy save with upload plans, at equal score?

An upper bound on what the bytes goal of upload plans can reach on a scenario's requests,
independent of training. Per request, a policy either answers on the edge (its score, 0 bytes)
or sends the request to the cloud under some upload plan (that plan's cloud score and bytes).
Ignoring latency and queues altogether, the cheapest way to reach a mean score S is a
Lagrangian choice: per request, the option maximising ``score - mu * bytes`` for some ``mu``.
Sweeping ``mu`` traces the (score, bytes) frontier of two policy families with perfect
knowledge of every request's scores:

* *without plans*: edge or the cloud with everything sent whole;
* *with plans*: edge or the cloud under any of the upload plans.

At each score level the ratio ``bytes with plans / bytes without`` is the best any policy with
plans can do against the best without, at that score. Scores are expected scores on a synthetic
profile (each model's probability of a correct answer given the request's latent difficulty, no
coin flips) and the recorded scores on a recording (hindsight: a looser bound). Speculative
uploads that are cancelled cost bytes too; this bound charges none.

Example (a second or two)::

    python examples/plan_headroom.py --profile mobile-3g
    python examples/plan_headroom.py --trace shapes-real
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mllm_offload.decision import SEND_ALL
from mllm_offload.errors import UserInputError
from mllm_offload.scenario import Scenario


def frontier(edge: np.ndarray, cloud: np.ndarray, nbytes: np.ndarray, mus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean score and mean bytes of the Lagrangian choice at each ``mu`` (score per byte).

    ``edge``: (n,) edge scores; ``cloud``, ``nbytes``: (n, k) cloud scores and bytes of the k
    cloud options. Returns two arrays of ``len(mus)``.
    """
    scores, sizes = np.empty(len(mus)), np.empty(len(mus))
    for j, mu in enumerate(mus):
        val = cloud - mu * nbytes
        best = np.argmax(val, axis=1)
        rows = np.arange(len(edge))
        to_cloud = val[rows, best] > edge
        scores[j] = np.mean(np.where(to_cloud, cloud[rows, best], edge))
        sizes[j] = np.mean(np.where(to_cloud, nbytes[rows, best], 0.0))
    return scores, sizes


def bytes_at(score: float, scores: np.ndarray, sizes: np.ndarray) -> float | None:
    """Bytes of the frontier at ``score`` (linear between points; None outside it)."""
    order = np.argsort(scores)
    s, b = scores[order], sizes[order]
    if not (s[0] <= score <= s[-1]):
        return None
    return float(np.interp(score, s, b))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="mobile-3g", help="synthetic profile [mobile-3g]")
    ap.add_argument("--trace", help="recorded request trace with variants, or an embedded name (e.g. shapes-real)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test", "all"), help="requests to read [test]")
    ap.add_argument("--scores", default="0.60,0.65,0.70,0.72,0.74,0.76,0.78,0.80",
                    help="comma-separated mean scores at which to compare the two frontiers")
    a = ap.parse_args(argv)
    try:
        scn = Scenario.build(profile=a.profile, trace=a.trace)
        tr = scn.make_env(a.split).trace
        if tr.plans is None:
            raise UserInputError(f"{a.trace or a.profile}: the requests have no upload-plan variants")
        levels = [float(x) for x in a.scores.split(",") if x.strip()]
    except (UserInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pt = tr.plans
    if tr.has_expected_scores:
        edge, _, _ = tr.expected_scores()
        cloud = pt.cloud_score_expected if pt.cloud_score_expected is not None else pt.cloud_score
        kind = "expected scores (latent difficulty)"
    else:
        edge, cloud, kind = tr.edge_score, pt.cloud_score, "recorded scores (hindsight)"
    nbytes = pt.payload_bytes
    ok = ~np.isnan(cloud) & ~np.isnan(nbytes)
    cloud = np.where(ok, cloud, -np.inf)  # a variant the trace has no outcome for is never chosen
    nbytes = np.where(ok, nbytes, 0.0)
    mus = np.concatenate([[0.0], np.logspace(-9, -2, 400)])
    s_all, b_all = frontier(edge, cloud[:, [SEND_ALL.index]], nbytes[:, [SEND_ALL.index]], mus)
    s_pl, b_pl = frontier(edge, cloud, nbytes, mus)
    print(f"{tr.meta.get('source') or a.trace or a.profile}, split {a.split}: {len(edge)} requests, {kind}")
    print(f"edge only: score {np.mean(edge):.3f}; everything to the cloud whole: score {np.mean(cloud[:, SEND_ALL.index]):.3f}, "
          f"{np.mean(nbytes[:, SEND_ALL.index]) / 1e6:.3f} MB per request")
    print(f"best score without plans {s_all.max():.3f}, with plans {s_pl.max():.3f}\n")
    print("| mean score | MB per request, best without plans | MB per request, best with plans | ratio |")
    print("|---|---|---|---|")
    for s in levels:
        b0, b1 = bytes_at(s, s_all, b_all), bytes_at(s, s_pl, b_pl)
        if b0 is None or b1 is None:
            print(f"| {s:.2f} | {'-' if b0 is None else f'{b0 / 1e6:.4f}'} | {'-' if b1 is None else f'{b1 / 1e6:.4f}'} | outside a frontier |")
            continue
        print(f"| {s:.2f} | {b0 / 1e6:.4f} | {b1 / 1e6:.4f} | {b1 / b0 if b0 > 0 else float('nan'):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
