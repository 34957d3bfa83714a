"""Abuse suite (b): property tests of the parsers of user files and specs.

Whatever the input, the trace reader (:func:`~mllm_offload.trace_format.load_trace`), the
bandwidth readers (Pensieve and Mahimahi text, :func:`~mllm_offload.traces.bandwidth.bandwidth_source`
specs) and the config loaders (:func:`~mllm_offload.config.load_yaml`,
:func:`~mllm_offload.config.load_hyperparams`, ``--config`` overrides) either return a result or
raise :class:`~mllm_offload.errors.UserInputError` with one line; any other exception (a traceback
for the user) fails the test. Each property runs at most :data:`EXAMPLES` examples (about 200),
so the file takes well under a minute.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mllm_offload.config import (
    EpisodeConfig,
    PPOHyperparams,
    RewardWeights,
    ScenarioOverrides,
    SystemConfig,
    load_hyperparams,
    load_yaml,
)
from mllm_offload.errors import UserInputError
from mllm_offload.trace_format import load_trace
from mllm_offload.traces.bandwidth import bandwidth_source, load_bandwidth

EXAMPLES = 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def result_or_user_error(fn: Callable[[], Any]) -> Any:
    """``fn()``; a :class:`UserInputError` must be one line. Anything else propagates (a failure)."""
    try:
        return fn()
    except UserInputError as e:
        assert "\n" not in str(e) and str(e).strip(), repr(str(e))
        return e


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# -- strategies ---------------------------------------------------------------------------------

#: numbers a hand-edited or hostile file may hold
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 2**63, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, -1e-300, 1e300, 5e-324]),
)
JSON_LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=8))
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def _real_trace_lines(n: int = 6) -> list[str]:
    f = resources.files("mllm_offload") / "traces" / "data" / "shapes-real.jsonl.gz"
    with gzip.open(str(f), "rt", encoding="utf-8") as fh:
        return [next(fh).rstrip("\n") for _ in range(n + 1)]


TRACE_LINES = _real_trace_lines()
HEADER = json.loads(TRACE_LINES[0])
RECORDS = [json.loads(x) for x in TRACE_LINES[1:]]


def _paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, (*prefix, k))
    return out


RECORD_PATHS = _paths(RECORDS[0])
HEADER_PATHS = [*_paths(HEADER), ("meta", "started_unix"), ("meta", "ordered")]


def _set(d: Any, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        if not isinstance(d, dict):
            return
        d = d.setdefault(k, {})
    if isinstance(d, dict):
        d[path[-1]] = value


@st.composite
def mutated(draw: st.DrawFn, base: dict, paths: list[tuple]) -> dict:
    """``base`` with one to three fields replaced by arbitrary JSON values (or removed)."""
    d = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        if draw(st.integers(0, 5)) == 0:
            parent = d
            for k in path[:-1]:
                parent = parent.get(k, {}) if isinstance(parent, dict) else {}
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
        else:
            _set(d, path, draw(JSON_VALUES))
    return d


def _dump(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True)  # NaN and Infinity tokens, which json.loads accepts


def _load(path: Path) -> Any:
    return result_or_user_error(lambda: load_trace(path, warn=lambda message: None))


# -- traces -------------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=2000), kind=st.sampled_from(["plain", "gzip of it", "it as .gz"]))
def test_trace_any_bytes(work, data, kind):
    p = work / ("t.jsonl" if kind == "plain" else "t.jsonl.gz")
    p.write_bytes(gzip.compress(data) if kind == "gzip of it" else data)
    _load(p)


#: lines json.dumps cannot write: integers past Python's 4300-digit limit, deep nesting, odd separators
NASTY_LINES = st.sampled_from([
    '{"id": "x", "arrival_s": 1' + "0" * 5000 + "}",
    TRACE_LINES[1].replace('"payload_bytes":{"text":47', '"payload_bytes":{"text":' + "9" * 5000),
    "[" * 5000 + "]" * 5000,
    '{"route": ' + "[" * 3000 + "]" * 3000 + "}",
    TRACE_LINES[1].replace('"id":"s0-0"', '"id":"a\u2028b"'),
    TRACE_LINES[1].replace('"id":"s0-0"', '"id":"a bc"'),
    TRACE_LINES[1][:-1] + ', "route": {"x": NaN}}',
    "\r",
    "\ufeff" + TRACE_LINES[1],
])


@FUZZ
@given(lines=st.lists(st.text(max_size=80) | NASTY_LINES, max_size=6), newline=st.booleans())
def test_trace_header_then_any_lines(work, lines, newline):
    p = work / "t.jsonl"
    p.write_text("\n".join([TRACE_LINES[0], *TRACE_LINES[1:3], *lines]) + ("\n" if newline else ""), encoding="utf-8")
    _load(p)


@FUZZ
@given(header=mutated(HEADER, HEADER_PATHS), records=st.lists(st.one_of(st.sampled_from(RECORDS), mutated(RECORDS[0], RECORD_PATHS),
                                                                          mutated(RECORDS[1], RECORD_PATHS)), min_size=1, max_size=4))
def test_trace_mutated_records(work, header, records):
    p = work / "t.jsonl"
    p.write_text("\n".join(_dump(x) for x in [header, *records]) + "\n", encoding="utf-8")
    out = _load(p)
    if not isinstance(out, UserInputError):
        assert len(out) == len(records)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len("\n".join(TRACE_LINES)) + 1))
def test_trace_cut_at_any_byte(work, cut):
    p = work / "t.jsonl"
    p.write_text(("\n".join(TRACE_LINES) + "\n")[:cut], encoding="utf-8")
    out = _load(p)
    if not isinstance(out, UserInputError):  # whatever was cut, the complete records are all there
        complete = ("\n".join(TRACE_LINES) + "\n")[:cut].count("\n") - 1
        assert len(out) in (complete, complete + 1)


@FUZZ
@given(starts=st.lists(JSON_VALUES, min_size=2, max_size=2), headers=st.lists(mutated(HEADER, HEADER_PATHS), min_size=2, max_size=2))
def test_trace_log_folder_with_any_headers(work, starts, headers):
    d = work / "logs"
    d.mkdir(exist_ok=True)
    for i, (start, header) in enumerate(zip(starts, headers)):
        if isinstance(header.get("meta"), dict):
            header["meta"]["started_unix"] = start
        rec = dict(RECORDS[i], id=f"f{i}")
        (d / f"route-{i}.jsonl").write_text(_dump(header) + "\n" + _dump(rec) + "\n", encoding="utf-8")
    _load(d)


# -- bandwidth ----------------------------------------------------------------------------------

TOKENS = st.one_of(
    st.integers(min_value=-10, max_value=10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["²", "١٢", "٣", "1e400", "nan", "inf", "-0", "1_000", "0x10", "1" * 5000, "0" * 40 + "1", "+5", " "]),
    st.text(max_size=4),
)
BW_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(TOKENS, max_size=3).map(" ".join), max_size=25).map("\n".join),
    st.lists(st.integers(min_value=0, max_value=10**10), max_size=40).map(lambda ms: "\n".join(map(str, sorted(ms)))),
)


@FUZZ
@given(text=BW_TEXT, fmt=st.sampled_from(["auto", "pensieve", "mahimahi"]))
def test_bandwidth_file_any_text(work, text, fmt):
    p = work / "bw.log"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    out = result_or_user_error(lambda: load_bandwidth(p, fmt))
    if not isinstance(out, UserInputError):
        assert out.period_s <= 86_400 and 1e-3 <= out.mean_mbps <= 1e6
        t = out.transfer_time(1.5, 1_000_000)
        assert t > 0 and t == t and t < float("inf")


SPECS = st.one_of(
    st.text(max_size=40),
    st.builds(lambda x: "constant:" + x, st.text(max_size=20)),
    st.builds(lambda xs: "constant:" + ",".join(xs), st.lists(TOKENS, max_size=3)),
    st.builds(lambda x: "markov:" + x, st.text(max_size=12)),
    st.sampled_from(["pensieve-sample", "pensive-sample", "markov:mobile-3g", "constant:", "constant:,", "a" * 5000, "x\x00y"]),
)


@FUZZ
@given(spec=SPECS, split=st.sampled_from(["train", "val", "test", "all"]))
def test_bandwidth_source_any_spec(work, monkeypatch, spec, split):
    # specs are resolved from an empty folder: never walk up into the real file system
    if os.path.isabs(spec) or ".." in spec or spec.startswith("~"):
        spec = "rel-" + spec.lstrip("/~.")
    monkeypatch.chdir(work)
    out = result_or_user_error(lambda: bandwidth_source(spec, split, n_synthetic=2, duration_s=30.0))
    if not isinstance(out, UserInputError):
        assert out and all(tr.mean_mbps >= 1e-3 for tr in out)


# -- configs ------------------------------------------------------------------------------------

MODELS = [SystemConfig, RewardWeights, EpisodeConfig, ScenarioOverrides, PPOHyperparams]
FIELDS = sorted({f for m in MODELS for f in m.model_fields} | {"system", "reward", "episode", "default", "mobile-3g"})
YAML_SNIPPETS = st.sampled_from([
    "!!python/object/apply:os.system ['echo hi']", "2001-13-45", "2024-02-30 25:61:00", "&a [*a]", "*undefined",
    "? [1, 2]\n: 3", "{a: 1, a: 2}", "[" * 200 + "]" * 200, "!!binary AAAA", "!!float .inf", ".nan", "0x1F", "1_000",
    "%YAML 1.1\n---\na: 1", "---\n---\n", "\t- tab", "\x00", "\ufeffsystem: {}", "a: !!set {x}", "!!timestamp 2001-99-99", "!!timestamp 2001-99-99\n!!python/object/apply:os.system ['echo hi']",
    "!!timestamp x", "a: !!timestamp 99999-01-01", "!!binary ~", "!!int x", "!!float x", "!!bool maybe", "!!omap [1]", "!!pairs [a]",
])
YAML_DOCS = st.recursive(
    JSON_LEAVES, lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), children, max_size=4),
    max_leaves=10,
)


def _yaml_text(draw_value: Any) -> str:
    try:
        return yaml.safe_dump(draw_value, allow_unicode=True)
    except yaml.YAMLError:
        return "{}"


CONFIG_TEXT = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    YAML_SNIPPETS.map(str.encode),
    st.lists(YAML_SNIPPETS | st.text(max_size=20), max_size=4).map(lambda xs: "\n".join(xs).encode("utf-8", "surrogatepass")),
    YAML_DOCS.map(lambda v: _yaml_text(v).encode()),
    st.dictionaries(st.sampled_from(["system", "reward", "episode"]),
                    st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=3), max_size=3).map(lambda v: _yaml_text(v).encode()),
)


@FUZZ
@given(data=CONFIG_TEXT, model=st.sampled_from(MODELS))
def test_load_yaml_any_bytes(work, data, model):
    p = work / "c.yaml"
    p.write_bytes(data)
    out = result_or_user_error(lambda: load_yaml(p, model))
    if isinstance(out, ScenarioOverrides):  # what --config does with it next
        result_or_user_error(lambda: out.apply(str(p), SystemConfig(), RewardWeights(), EpisodeConfig()))


HP_DOCS = st.dictionaries(
    st.sampled_from(["default", "mobile-3g", "msao-paper"]) | st.text(max_size=6),
    st.one_of(JSON_VALUES, st.dictionaries(st.sampled_from(sorted(PPOHyperparams.model_fields)), JSON_VALUES, max_size=4)),
    max_size=3,
)


@FUZZ
@given(data=st.one_of(CONFIG_TEXT, HP_DOCS.map(lambda v: _yaml_text(v).encode())), section=st.sampled_from(["default", "mobile-3g", "nope"]))
def test_load_hyperparams_any_bytes(work, data, section):
    p = work / "hp.yaml"
    p.write_bytes(data)
    result_or_user_error(lambda: load_hyperparams(p, section))
