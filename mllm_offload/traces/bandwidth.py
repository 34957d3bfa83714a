"""Uplink bandwidth traces: Pensieve and Mahimahi readers, synthetic models, transfer times.

A :class:`BandwidthTrace` is a piecewise-constant rate in Mbps that loops forever. Its core
operation, :meth:`BandwidthTrace.transfer_time`, integrates the rate to find how long ``n_bytes``
take starting at ``start_s``.

Formats read from files:

* **Pensieve**: one ``time_s  Mbps`` pair per line (whitespace separated); rate ``r_i`` holds from
  ``t_i`` to ``t_{i+1}``, the last one for the median step.
* **Mahimahi**: one integer millisecond timestamp per line, each a 1500-byte delivery
  opportunity; binned into ``bin_s`` (default 0.1 s) rate steps; the trace loops at its last
  timestamp.

Limits (any trace, read or built): a period of at most :data:`MAX_PERIOD_S` (one day; real
traces last minutes), rates of at most :data:`MAX_MBPS`, and a mean rate of at least
:data:`MIN_MBPS` (``constant:`` rates too), so that no transfer takes astronomically long and no
reader allocates memory in proportion to a timestamp it has not checked.

Embedded real traces (:func:`embedded_bandwidth_names`): ``pensieve-sample`` is 24 traces of
the Pensieve project's public traces (12 FCC broadband, 12 Norway HSDPA 3G commutes, MIT
licence), shipped in the package under ``traces/data/bandwidth/`` with their provenance; they
are read with :mod:`importlib.resources` and split by file name like a folder.

When no folder is given, the embedded default is a synthetic **Markov-modulated** process
(:data:`MARKOV_MODELS`): a Markov chain over rate states on a 1 s grid, each second's rate drawn
log-normally around its state's level. ``mobile-3g`` was fitted with :func:`fit_markov` to the 127
traces of the Pensieve project's public training set (FCC broadband + Norway HSDPA 3G): 4 states
split at the 25/50/75 % quantiles of ln(Mbps) on a 1 s grid (rates floored at 0.01 Mbps).
Fitted statistics of those traces: mean 1.30 Mbps, median 1.04 Mbps, quantile edges 0.59 /
1.04 / 1.72 Mbps. Re-fit with ``python -m mllm_offload.traces.bandwidth DIR``.
"""

from __future__ import annotations

import bisect
import difflib
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserInputError
from ..splits import MARKOV_TRACE_SEED, check_split, split_of_name

if TYPE_CHECKING:  # importlib.resources.abc is Python >= 3.11; the annotations are strings
    from importlib.resources.abc import Traversable

__all__ = [
    "MARKOV_MODELS",
    "MAX_MBPS",
    "MAX_PERIOD_S",
    "MIN_MBPS",
    "BandwidthTrace",
    "MarkovBandwidth",
    "bandwidth_source",
    "embedded_bandwidth_names",
    "fit_markov",
    "load_bandwidth",
    "load_bandwidth_dir",
    "load_embedded_bandwidth",
]

_BYTES_PER_MBIT = 125_000.0
#: longest loop period of a bandwidth trace, seconds (one day)
MAX_PERIOD_S = 86_400.0
#: fastest rate of a step, Mbps (1 Tbps)
MAX_MBPS = 1e6
#: slowest mean rate of a trace (and slowest ``constant:`` rate), Mbps (1 kbps)
MIN_MBPS = 1e-3


class BandwidthTrace:
    """Piecewise-constant uplink rate that repeats with period :attr:`period_s`.

    Args:
        times_s: start of each rate step, seconds, strictly increasing (shifted to start at 0).
        mbps: rate of each step, Mbps (>= 0, not all zero).
        period_s: loop period, seconds; defaults to the last start plus the median step.
        name: label used in reports.
    """

    __slots__ = ("_cum", "_period_bytes", "max_bps", "name", "period_s", "rates_bps", "times")

    def __init__(
        self,
        times_s: Sequence[float],
        mbps: Sequence[float],
        period_s: float | None = None,
        name: str = "bandwidth",
    ) -> None:
        t = np.asarray(times_s, dtype=np.float64)
        r = np.asarray(mbps, dtype=np.float64)
        if t.ndim != 1 or t.shape != r.shape or len(t) == 0:
            raise ValueError(f"{name}: times and rates must be 1-D and of equal, non-zero length")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(r))):
            raise ValueError(f"{name}: times and rates must be finite")
        if np.any(r < 0):
            raise ValueError(f"{name}: rates must be >= 0 Mbps")
        if np.any(r > MAX_MBPS):
            raise ValueError(f"{name}: rate {float(r.max()):g} Mbps exceeds {MAX_MBPS:g} Mbps")
        if np.any(np.diff(t) <= 0):
            raise ValueError(f"{name}: times must be strictly increasing")
        t = t - t[0]
        if period_s is None:
            step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
            period_s = float(t[-1] + step)
        if not math.isfinite(period_s) or period_s <= t[-1]:
            raise ValueError(f"{name}: period {period_s} s must exceed the last time {t[-1]} s")
        if period_s > MAX_PERIOD_S:
            raise ValueError(f"{name}: lasts {period_s:g} s; a bandwidth trace may last at most {MAX_PERIOD_S:g} s (one day)")
        bps = r * _BYTES_PER_MBIT
        widths = np.diff(np.append(t, period_s))
        cum = np.concatenate([[0.0], np.cumsum(bps * widths)])
        if cum[-1] <= 0:
            raise ValueError(f"{name}: every rate is zero; nothing could ever be sent")
        mean_mbps = float(cum[-1]) / period_s / _BYTES_PER_MBIT
        if mean_mbps < MIN_MBPS:
            raise ValueError(f"{name}: mean rate {mean_mbps:.3g} Mbps is below {MIN_MBPS:g} Mbps; nothing useful could be sent")
        self.name = name
        self.times: list[float] = t.tolist()
        self.rates_bps: list[float] = bps.tolist()  # bytes per second per step
        self.period_s = float(period_s)
        self.max_bps = float(bps.max())  # fastest step, bytes per second
        self._cum: list[float] = cum.tolist()  # bytes delivered from 0 to times[i] (and period)
        self._period_bytes = float(cum[-1])

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def constant(cls, mbps: float, name: str | None = None) -> BandwidthTrace:
        """A constant-rate link of ``mbps`` Mbps."""
        return cls([0.0], [mbps], period_s=1.0, name=name or f"constant-{mbps:g}mbps")

    # -- queries --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.times)

    def __repr__(self) -> str:
        return f"BandwidthTrace({self.name!r}, steps={len(self)}, period={self.period_s:g}s, mean={self.mean_mbps:.3g}Mbps)"

    @property
    def mean_mbps(self) -> float:
        """Time-average rate over one period, Mbps."""
        return self._period_bytes / self.period_s / _BYTES_PER_MBIT

    def rate_mbps(self, t_s: float) -> float:
        """The true rate at time ``t_s`` (a simulator-only quantity), Mbps."""
        x = t_s % self.period_s
        return self.rates_bps[bisect.bisect_right(self.times, x) - 1] / _BYTES_PER_MBIT

    def _delivered(self, x: float) -> float:
        """Bytes delivered from time 0 to ``x`` (0 <= x <= period)."""
        j = bisect.bisect_right(self.times, x) - 1
        return self._cum[j] + (x - self.times[j]) * self.rates_bps[j]

    def bytes_between(self, t0_s: float, t1_s: float) -> float:
        """Bytes the link can carry between ``t0_s`` and ``t1_s`` (seconds, t0 <= t1)."""
        if t1_s <= t0_s:
            return 0.0
        P, Pb = self.period_s, self._period_bytes
        k0, x0 = divmod(t0_s, P)
        k1, x1 = divmod(t1_s, P)
        return (k1 - k0) * Pb + self._delivered(x1) - self._delivered(x0)

    def transfer_time(self, start_s: float, n_bytes: float) -> float:
        """Seconds needed to send ``n_bytes`` starting at ``start_s`` (integrates the rate, loops)."""
        if n_bytes <= 0:
            return 0.0
        P, Pb = self.period_s, self._period_bytes
        k, x = divmod(start_s, P)
        target = self._delivered(x) + n_bytes  # bytes counted from the start of period k
        periods, rem = divmod(target, Pb)
        if rem == 0.0 and periods > 0:  # ends exactly on a period boundary
            periods, rem = periods - 1, Pb
        cum = self._cum
        j = bisect.bisect_left(cum, rem) - 1  # last boundary strictly below rem
        if j < 0:
            j = 0
        while self.rates_bps[j] == 0.0:  # cannot end inside a zero-rate step
            j += 1
        end = self.times[j] + (rem - cum[j]) / self.rates_bps[j]
        return (k + periods) * P + end - start_s


# -- file readers ------------------------------------------------------------------------------

_SKIP_PREFIXES = ("license", "readme")


def _parse_error(path: str | Path, line: int, msg: str) -> UserInputError:
    return UserInputError(f"{path}:{line}: {msg}")


def _clip(text: str, n: int = 60) -> str:
    """``text`` cut to ``n`` characters for an error line."""
    return text if len(text) <= n else text[:n] + "..."


def load_bandwidth(path: str | Path, fmt: str = "auto", bin_s: float = 0.1) -> BandwidthTrace:
    """Read one bandwidth trace file (``fmt``: ``pensieve``, ``mahimahi`` or ``auto``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UserInputError(f"{p}: cannot read bandwidth trace: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{p}: not a text bandwidth trace (not UTF-8)") from None
    return _parse_bandwidth(text, p, p.name, fmt, bin_s)


def _parse_bandwidth(text: str, p: str | Path, name: str, fmt: str, bin_s: float) -> BandwidthTrace:
    """Parse one trace's ``text``; ``p`` labels errors, ``name`` names the trace."""
    rows = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise UserInputError(f"{p}: empty bandwidth trace")
    if fmt == "auto":
        fmt = "mahimahi" if len(rows[0][1]) == 1 else "pensieve"
    if fmt == "pensieve":
        t, r = [], []
        for n, f in rows:
            if len(f) != 2:
                raise _parse_error(p, n, f"expected 'time_s Mbps' (2 fields), got {len(f)}")
            try:
                a, b = float(f[0]), float(f[1])
            except ValueError:
                raise _parse_error(p, n, f"not numbers: {_clip(' '.join(f))!r}") from None
            if not (math.isfinite(a) and math.isfinite(b)):
                raise _parse_error(p, n, "time and rate must be finite")
            if b < 0:
                raise _parse_error(p, n, f"rate must be >= 0 Mbps, got {b}")
            if b > MAX_MBPS:
                raise _parse_error(p, n, f"rate {b:g} Mbps exceeds {MAX_MBPS:g} Mbps")
            if t and a <= t[-1]:
                raise _parse_error(p, n, f"time {a} s does not increase (previous {t[-1]} s)")
            t.append(a)
            r.append(b)
        try:
            return BandwidthTrace(t, r, name=name)
        except ValueError as e:
            raise UserInputError(f"{p}: {e}") from None
    if fmt == "mahimahi":
        if not (math.isfinite(bin_s) and 1e-3 <= bin_s <= 60.0):
            raise UserInputError(f"{p}: Mahimahi bin {bin_s} s: must be in [0.001, 60] s")
        ms: list[int] = []
        max_ms = int(MAX_PERIOD_S * 1000)
        for n, f in rows:
            if len(f) != 1 or not (f[0].isascii() and f[0].isdigit()):
                raise _parse_error(p, n, f"expected one integer millisecond timestamp, got {_clip(' '.join(f))!r}")
            if len(f[0]) > 30:
                raise _parse_error(p, n, f"timestamp of {len(f[0])} digits: a trace may last at most {max_ms} ms (one day)")
            v = int(f[0])
            if v > max_ms:
                raise _parse_error(p, n, f"timestamp {v} ms: a trace may last at most {max_ms} ms (one day)")
            if ms and v < ms[-1]:
                raise _parse_error(p, n, f"timestamp {v} ms goes backwards (previous {ms[-1]} ms)")
            ms.append(v)
        period = max(ms[-1] / 1000.0, bin_s)
        nbins = max(1, math.ceil(period / bin_s - 1e-9))  # at most a day of bins (checked above)
        counts = np.bincount(np.minimum((np.asarray(ms) / 1000.0 / bin_s).astype(int), nbins - 1), minlength=nbins)
        mbps = counts * 1500 * 8 / bin_s / 1e6
        try:
            return BandwidthTrace(np.arange(nbins) * bin_s, mbps, period_s=nbins * bin_s, name=name)
        except ValueError as e:
            raise UserInputError(f"{p}: {e}") from None
    raise UserInputError(f"bandwidth format: unknown {fmt!r} (pensieve, mahimahi, auto)")


def _is_trace_name(name: str) -> bool:
    """A file in a bandwidth folder that is a trace (not hidden, not a README, licence or ``.md``)."""
    return not name.startswith(".") and not name.lower().startswith(_SKIP_PREFIXES) and not name.lower().endswith(".md")


def _trace_files(d: Path) -> list[Path]:
    files = sorted(f for f in d.iterdir() if f.is_file() and _is_trace_name(f.name))
    for f in files:
        try:
            f.name.encode("utf-8")
        except UnicodeEncodeError:
            raise UserInputError(f"{d}: file name {f.name!r} is not valid UTF-8 (splits are by file name); rename it") from None
    return files


def load_bandwidth_dir(path: str | Path, split: str = "all", fmt: str = "auto") -> list[BandwidthTrace]:
    """All traces in a folder, or those of one ``split`` (``train``, ``val``, ``test``, ``all``)."""
    d = Path(path)
    if not d.is_dir():
        raise UserInputError(f"{d}: bandwidth folder does not exist or is not a folder")
    check_split(split)
    files = [f for f in _trace_files(d) if split == "all" or split_of_name(f.name) == split]
    if not files:
        raise UserInputError(f"{d}: no bandwidth trace files" + ("" if split == "all" else f" in split {split!r}"))
    return [load_bandwidth(f, fmt) for f in files]


# -- embedded trace sets (package data) ---------------------------------------------------------


def _embedded_root() -> Traversable:
    """The package folder holding one sub-folder per embedded trace set (works from a wheel too)."""
    return resources.files(__package__ or "mllm_offload.traces") / "data" / "bandwidth"


def embedded_bandwidth_names() -> list[str]:
    """Names of the embedded real-trace sets, usable as a bandwidth spec (e.g. ``pensieve-sample``)."""
    root = _embedded_root()
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))


def load_embedded_bandwidth(name: str, split: str = "all", fmt: str = "auto") -> list[BandwidthTrace]:
    """The traces of embedded set ``name`` in ``split`` (split by file name, as for a folder)."""
    check_split(split)
    if name not in embedded_bandwidth_names():
        raise _unknown_spec(name)
    d = _embedded_root() / name
    files = sorted((f for f in d.iterdir() if f.is_file() and _is_trace_name(f.name)), key=lambda f: f.name)
    files = [f for f in files if split == "all" or split_of_name(f.name) == split]
    if not files:
        raise UserInputError(f"bandwidth: embedded {name!r}: no trace files" + ("" if split == "all" else f" in split {split!r}"))
    return [_parse_bandwidth(f.read_text(encoding="utf-8"), f"{name}/{f.name}", f.name, fmt, 0.1) for f in files]


def _unknown_spec(spec: str) -> UserInputError:
    """One line: what ``spec`` could have been, with a "did you mean" for near misses."""
    names = embedded_bandwidth_names()
    candidates = names + [f"markov:{m}" for m in MARKOV_MODELS]
    close = difflib.get_close_matches(spec, candidates, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UserInputError(
        f"bandwidth: {_clip(spec)!r} is not a folder, an embedded trace set or a synthetic spec{hint} "
        f"(embedded: {', '.join(names) or 'none'}; or a folder of Pensieve/Mahimahi trace files, "
        f"constant:MBPS[,MBPS...], markov:NAME with NAME in {', '.join(MARKOV_MODELS)})"
    )


# -- synthetic Markov-modulated model ------------------------------------------------------------


@dataclass(frozen=True)
class MarkovBandwidth:
    """Markov-modulated log-normal rate process on a ``step_s`` grid.

    Attributes:
        transition: row-stochastic matrix between rate states (per step).
        log_mean: mean of ln(Mbps) in each state.
        log_std: standard deviation of ln(Mbps) in each state.
        step_s: seconds per step.
        floor_mbps: smallest rate generated, Mbps.
    """

    transition: tuple[tuple[float, ...], ...]
    log_mean: tuple[float, ...]
    log_std: tuple[float, ...]
    step_s: float = 1.0
    floor_mbps: float = 0.01

    def sample(self, duration_s: float, rng: np.random.Generator, name: str = "markov") -> BandwidthTrace:
        """One trace of ``duration_s`` seconds."""
        n = max(2, int(duration_s / self.step_s))
        P = np.asarray(self.transition)
        cdf = np.cumsum(P, axis=1)
        k = len(self.log_mean)
        # start from the chain's stationary distribution
        w, v = np.linalg.eig(P.T)
        pi = np.real(v[:, np.argmin(np.abs(w - 1))])
        pi = pi / pi.sum()
        states = np.empty(n, dtype=int)
        states[0] = rng.choice(k, p=pi)
        u = rng.random(n)
        for i in range(1, n):
            states[i] = min(int(np.searchsorted(cdf[states[i - 1]], u[i])), k - 1)
        lm, ls = np.asarray(self.log_mean), np.asarray(self.log_std)
        mbps = np.maximum(np.exp(lm[states] + ls[states] * rng.standard_normal(n)), self.floor_mbps)
        return BandwidthTrace(np.arange(n) * self.step_s, mbps, period_s=n * self.step_s, name=name)


def fit_markov(traces: Sequence[BandwidthTrace], n_states: int = 4, step_s: float = 1.0) -> MarkovBandwidth:
    """Fit a :class:`MarkovBandwidth` to traces: quantile states of ln(Mbps) on a ``step_s`` grid."""
    series = []
    for tr in traces:
        grid = np.arange(0.0, tr.period_s, step_s)
        series.append(np.log(np.maximum([tr.rate_mbps(x) for x in grid], 0.01)))
    allv = np.concatenate(series)
    edges = np.quantile(allv, np.linspace(0, 1, n_states + 1)[1:-1])
    counts = np.zeros((n_states, n_states))
    for s in series:
        st = np.searchsorted(edges, s)
        np.add.at(counts, (st[:-1], st[1:]), 1.0)
    counts += 1e-6
    P = counts / counts.sum(axis=1, keepdims=True)
    st = np.searchsorted(edges, allv)
    return MarkovBandwidth(
        transition=tuple(tuple(round(float(x), 5) for x in row) for row in P),
        log_mean=tuple(round(float(allv[st == j].mean()), 4) for j in range(n_states)),
        log_std=tuple(round(float(allv[st == j].std()), 4) for j in range(n_states)),
        step_s=step_s,
    )


#: Embedded synthetic bandwidth models (see the module docstring for how they were fitted).
MARKOV_MODELS: dict[str, MarkovBandwidth] = {
    # fit_markov(load_bandwidth_dir(<the 127 traces of the Pensieve project's training set>), 4, 1.0)
    "mobile-3g": MarkovBandwidth(
        transition=(
            (0.90223, 0.07682, 0.01506, 0.00589),
            (0.07765, 0.8066, 0.10621, 0.00954),
            (0.01627, 0.10633, 0.80433, 0.07306),
            (0.00424, 0.01021, 0.07399, 0.91157),
        ),
        log_mean=(-1.1576, -0.2275, 0.2524, 0.9504),
        log_std=(0.6117, 0.1621, 0.1436, 0.3),
    ),
}



def bandwidth_source(spec: str, split: str = "all", n_synthetic: int = 48, duration_s: float = 900.0) -> list[BandwidthTrace]:
    """Resolve a bandwidth spec to traces.

    ``spec`` is a folder of trace files (split by file name, see :func:`mllm_offload.splits.split_of_name`),
    the name of an embedded real-trace set (:func:`embedded_bandwidth_names`, e.g. ``pensieve-sample``;
    split by file name the same way; an existing folder of that name wins),
    ``constant:200,300,400`` (Mbps; the same for every split) or ``markov:NAME`` (a model of
    :data:`MARKOV_MODELS`; each split draws its own ``n_synthetic`` traces of ``duration_s``).
    Anything else is a :class:`UserInputError` listing the choices, with a "did you mean" for near misses.
    """
    if spec.startswith("constant:"):
        try:
            rates = [float(x) for x in spec[len("constant:"):].split(",") if x.strip()]
        except ValueError:
            raise UserInputError(f"bandwidth: {_clip(spec)!r}: expected constant:MBPS[,MBPS...]") from None
        if not rates or any(not (MIN_MBPS <= r <= MAX_MBPS) for r in rates):  # also NaN
            raise UserInputError(f"bandwidth: {_clip(spec)!r}: rates must be Mbps in [{MIN_MBPS:g}, {MAX_MBPS:g}]")
        return [BandwidthTrace.constant(r) for r in rates]
    if spec.startswith("markov:"):
        name = spec[len("markov:"):]
        if name not in MARKOV_MODELS:
            raise UserInputError(f"bandwidth: unknown synthetic model {_clip(name)!r} (known: {', '.join(MARKOV_MODELS)})")
        rng = np.random.default_rng(MARKOV_TRACE_SEED[check_split(split)])
        return [MARKOV_MODELS[name].sample(duration_s, rng, name=f"{name}-{split}-{i}") for i in range(n_synthetic)]
    try:
        exists = Path(spec).exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        exists = False
    if exists:
        return load_bandwidth_dir(spec, split)
    if spec in embedded_bandwidth_names():
        return load_embedded_bandwidth(spec, split)
    raise _unknown_spec(spec)


if __name__ == "__main__":  # pragma: no cover - maintenance helper
    m = fit_markov(load_bandwidth_dir(sys.argv[1]))
    print(m)
