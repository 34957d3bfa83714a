"""Edge devices, the links between them, documented presets and the ``devices.yaml`` reader.

A :class:`DeviceSpec` is what the partition planner needs to know about one device:

====================  ==========  ===============================================================
field                 unit        meaning
====================  ==========  ===============================================================
``flops_per_s``       FLOP/s      sustained compute on transformer layers (not the datasheet peak);
                                  or give ``relative_speed`` (1.0 = the ``jetson-orin-nano``
                                  preset, :data:`REFERENCE_FLOPS_PER_S`)
``memory_bytes``      bytes       memory free for model weights and one request's KV cache (net of
                                  the OS, the runtime and other apps); ``"6 GB"`` is accepted
``link_mbps``         Mbit/s      sustained throughput of its network interface
``link_latency_s``    s           one-way latency of its access hop (device to switch or AP)
``load_mbps``         Mbit/s      how fast it can load weights it does not hold (redeployment);
                                  default: ``link_mbps`` (fetched from a peer over the LAN)
====================  ==========  ===============================================================

The link from device ``i`` to device ``j`` runs at ``min(link_mbps_i, link_mbps_j)`` with latency
``link_latency_s_i + link_latency_s_j`` (two access hops through one switch or access point),
unless an :class:`EdgeCluster` carries an explicit ``links`` matrix. Two Wi-Fi devices behind the
same access point share the air time, which this model does not charge: their real throughput
can be lower.

Presets (:data:`PRESETS`; ``[D]`` a figure derived by arithmetic from a quoted one, ``[?]`` an
assumption). Sustained FLOP/s come from measured throughput of known models where one was
published (FLOPs per token = 2 x parameters, plus attention), not from peak TOPS:

=========================  =========  ======  ========  =======================================
preset                     TFLOP/s    memory  link      where the figures come from
=========================  =========  ======  ========  =======================================
``phone``                  1.3 [D]    5 GB    474 Mbps  Transformer-Lite (arXiv 2403.20041):
                                      [?]               Gemma-2B prefill 330 tok/s, ChatGLM2-6B
                                                        121 tok/s on a phone GPU -> 1.3-1.4
                                                        TFLOP/s; Wi-Fi 6 (2x2) phone near the AP:
                                                        474 Mbps peak TCP (gameandtechfocus.com
                                                        Wi-Fi 6 review)
``tablet``                 1.0 [?]    4 GB    474 Mbps  the phone figure x 35/45, the ratio of
                                      [?]               the Apple A17 Pro Neural Engine (35 TOPS,
                                                        Apple) to the Snapdragon 8 Gen 3 NPU (45
                                                        TOPS, vendor figure), both weak [?]
``laptop-rtx4060``         9.1 [D]    7 GB    513 Mbps  Ollama Q4_0 Llama-3.1-8B decodes ~38 tok/s
                                      [?]               on an RTX 4060 8 GB laptop (substrate.lol
                                                        benchmarks), 2.7x the 14 tok/s of an Orin
                                                        Nano: 2.7 x the Orin Nano figure (a decode
                                                        ratio, so likely an underestimate of
                                                        compute); Wi-Fi 5 (2x2) near the AP
                                                        513-528 Mbps (same review)
``jetson-orin-nano``       3.34 [D]   6 GB    941 Mbps  CLIP ViT-B/16 at 95 images/s on the
                                      [?]               original Orin Nano 8GB (NVIDIA
                                                        jetson-generative-ai-playground
                                                        ``docs/benchmarks.md``) x 35.1 GFLOP per
                                                        224 px image [D]; 8 GB shared memory
                                                        (NVIDIA datasheet); Gigabit Ethernet, 941
                                                        Mbps TCP goodput [D]
``jetson-orin-nano-super`` 5.65 [D]   6 GB    941 Mbps  the same benchmark on the "Super" firmware
                                      [?]               (25 W): 161 images/s
``jetson-agx-orin``        23 [?]     56 GB   941 Mbps  the Orin Nano figure x 275/40, the ratio
                                      [?]               of their sparse INT8 TOPS (MLCommons
                                                        inference v4.1 Orin README; NVIDIA
                                                        datasheet); 64 GB LPDDR5
``rpi5``                   0.06 [?]   6 GB    941 Mbps  4 Cortex-A76 at 2.4 GHz: 154 GFLOP/s FP32
                                      [?]               NEON peak [D], 40 % sustained [?]
                                                        (circuitdigest.com); single-board
                                                        computers run models up to ~1.5 B
                                                        parameters reliably (arXiv 2511.07425)
=========================  =========  ======  ========  =======================================

Latencies: wired LAN round trip host to Raspberry Pi 0.53 ms on average (SLAC PingER) -> 0.27 ms
one way per wired access hop [D]; 5 GHz Wi-Fi in the same room pings under 1 ms, now and then 5
ms (tomshardware.com review) -> 0.5 ms one way per wireless hop [D]. Memory free for the model is
an assumption on every preset ([?]): the device's RAM less what the OS and runtime keep.

Cluster presets (:data:`CLUSTERS`) name ordered device lists: ``home-4`` (a laptop, an Orin
Nano, a tablet and a phone: strongly heterogeneous), ``jetson-3`` (one Super and two original
Orin Nanos: mildly heterogeneous).

``devices.yaml`` (:func:`load_devices`) is a list of devices, or a mapping with ``devices:`` and
an optional ``links:`` matrix. Each device is a preset name, or a mapping with an optional
``preset:`` to start from and any fields above::

    devices:
      - jetson-orin-nano
      - {preset: phone, memory_bytes: 3 GB}
      - {name: mini-pc, relative_speed: 2.0, memory_bytes: 12 GB, link_mbps: 941, link_latency_s: 0.0003}
    links:                     # optional, n x n; the diagonal is ignored
      mbps: [[0, 300, 900], [300, 0, 300], [900, 300, 0]]
      latency_s: [[0, 0.001, 0.0005], [0.001, 0, 0.001], [0.0005, 0.001, 0]]

A malformed file raises :class:`~mllm_offload.errors.UserInputError` with one line naming the
file and the field, e.g. ``devices.yaml: devices.1.memory_bytes: Input should be greater than 0``.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import StrictModel, format_validation_error
from ..errors import UserInputError

__all__ = [
    "CLUSTERS",
    "PRESETS",
    "REFERENCE_FLOPS_PER_S",
    "DeviceSpec",
    "EdgeCluster",
    "Links",
    "load_devices",
    "resolve_devices",
]

_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_BYTES = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGT]I?B|B)?\s*$", re.I)


def _parse_bytes(value: Any) -> Any:
    """``6e9``, ``"6e9"``, ``"6 GB"`` or ``"6GiB"`` -> bytes (float); anything else is left to pydantic."""
    if isinstance(value, str):
        m = _BYTES.match(value)
        if not m:
            raise ValueError(f"expected bytes such as 6e9 or '6 GB', got {value!r}")
        return float(m.group(1)) * _UNITS[(m.group(2) or "").upper()]
    return value


class DeviceSpec(StrictModel):
    """One edge device (see the module docstring for units and presets)."""

    name: str = Field(min_length=1, description="unique name in its cluster")
    flops_per_s: float = Field(ge=1e6, le=1e18, allow_inf_nan=False, description="sustained FLOP/s on transformer layers")
    memory_bytes: float = Field(ge=1e6, le=1e15, allow_inf_nan=False, description="bytes free for weights and one request's KV cache")
    link_mbps: float = Field(ge=1e-3, le=1e7, allow_inf_nan=False, description="sustained network throughput, Mbit/s")
    link_latency_s: float = Field(0.0005, ge=0.0, le=10.0, description="one-way latency of the access hop, s")
    load_mbps: float | None = Field(None, ge=1e-3, le=1e7, allow_inf_nan=False, description="weight-loading rate for redeployment, Mbit/s [link_mbps]")
    description: str = ""
    sources: dict[str, str] = Field(default_factory=dict, description="field -> where its value comes from")

    @model_validator(mode="before")
    @classmethod
    def _relative_speed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "relative_speed" in data:
            data = dict(data)
            rel = data.pop("relative_speed")
            if "flops_per_s" in data:
                raise ValueError("give flops_per_s or relative_speed, not both")
            try:
                rel = float(rel)
            except (TypeError, ValueError):
                raise ValueError(f"relative_speed: expected a number, got {rel!r}") from None
            if not rel > 0:
                raise ValueError(f"relative_speed: must be > 0, got {rel}")
            data["flops_per_s"] = rel * REFERENCE_FLOPS_PER_S
        return data

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        return _parse_bytes(value)

    @property
    def load_bytes_per_s(self) -> float:
        """Weight-loading rate in bytes/s (``load_mbps``, else ``link_mbps``)."""
        return (self.load_mbps or self.link_mbps) * 1e6 / 8.0


class Links(StrictModel):
    """An explicit link matrix: ``mbps[i][j]`` and ``latency_s[i][j]`` from device i to device j."""

    mbps: list[list[float]]
    latency_s: list[list[float]]

    @model_validator(mode="after")
    def _square(self) -> Links:
        n = len(self.mbps)
        bad = next((i for i, row in enumerate(self.mbps) if len(row) != n), None)
        if bad is not None:
            raise ValueError(f"mbps: expected a square matrix, but row {bad} of {n} has {len(self.mbps[bad])} numbers")
        if len(self.latency_s) != n or any(len(row) != n for row in self.latency_s):
            raise ValueError(f"latency_s: expected a {n} x {n} matrix like mbps")
        for i in range(n):
            for j in range(n):
                if i != j and not self.mbps[i][j] > 0:
                    raise ValueError(f"mbps[{i}][{j}]: must be > 0, got {self.mbps[i][j]}")
                if i != j and not self.latency_s[i][j] >= 0:
                    raise ValueError(f"latency_s[{i}][{j}]: must be >= 0, got {self.latency_s[i][j]}")
        return self


class EdgeCluster(StrictModel):
    """An ordered list of devices (the pipeline order) and, optionally, an explicit link matrix."""

    devices: list[DeviceSpec] = Field(min_length=1)
    links: Links | None = None

    @field_validator("devices")
    @classmethod
    def _unique_names(cls, devices: list[DeviceSpec]) -> list[DeviceSpec]:
        names = [d.name for d in devices]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"device names must be unique, {dup!r} repeats")
        return devices

    @model_validator(mode="after")
    def _consistent(self) -> EdgeCluster:
        if self.links is not None and len(self.links.mbps) != len(self.devices):
            raise ValueError(f"links: a {len(self.links.mbps)} x {len(self.links.mbps)} matrix for {len(self.devices)} devices")
        return self

    def __len__(self) -> int:
        return len(self.devices)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.devices]

    def link(self, i: int, j: int) -> tuple[float, float]:
        """``(bytes_per_s, latency_s)`` from device ``i`` to device ``j`` (``(inf, 0)`` when ``i == j``)."""
        if i == j:
            return float("inf"), 0.0
        if self.links is not None:
            return self.links.mbps[i][j] * 1e6 / 8.0, self.links.latency_s[i][j]
        a, b = self.devices[i], self.devices[j]
        return min(a.link_mbps, b.link_mbps) * 1e6 / 8.0, a.link_latency_s + b.link_latency_s

    def transfer_s(self, i: int, j: int, n_bytes: float) -> float:
        """Seconds to send ``n_bytes`` from device ``i`` to device ``j`` (0 on the same device)."""
        if i == j:
            return 0.0
        bps, lat = self.link(i, j)
        return lat + n_bytes / bps

    def without(self, index: int) -> EdgeCluster:
        """The cluster less device ``index`` (its row and column of ``links`` dropped too)."""
        keep = [k for k in range(len(self.devices)) if k != index]
        links = None
        if self.links is not None:
            links = Links(mbps=[[self.links.mbps[i][j] for j in keep] for i in keep],
                          latency_s=[[self.links.latency_s[i][j] for j in keep] for i in keep])
        return EdgeCluster(devices=[self.devices[k] for k in keep], links=links)


_WIFI6 = "Wi-Fi 6 (2x2) phone near the AP: 474 Mbps peak TCP (gameandtechfocus.com Wi-Fi 6 review)"
_WIFI_LAT = "5 GHz Wi-Fi, same room: ping under 1 ms, at times 5 ms (tomshardware.com review) -> 0.5 ms per hop [D]"
_GBE = "Gigabit Ethernet: 941 Mbps TCP goodput (1448 payload bytes per 1538-byte frame) [D]"
_GBE_LAT = "wired LAN RTT to a Raspberry Pi 0.53 ms on average (SLAC PingER) -> 0.27 ms per hop [D]"
_LOAD = "weights fetched from a peer over the LAN at the link rate [?]"
_CLIP_B16_GFLOP = 35.1  # CLIP ViT-B/16, 224 px: 197 tokens x 12 layers x 2 x 7.08 M + attention + patch embedding [D]

PRESETS: dict[str, DeviceSpec] = {
    "phone": DeviceSpec(
        name="phone", flops_per_s=1.3e12, memory_bytes=5e9, link_mbps=474.0, link_latency_s=0.0005,
        description="flagship phone (Snapdragon 8 Gen 3 class GPU)",
        sources={"flops_per_s": "Transformer-Lite (arXiv 2403.20041): Gemma-2B prefill 330 tok/s x 2 x 2.0 B non-embedding "
                                "parameters = 1.3 TFLOP/s; ChatGLM2-6B 121 tok/s -> 1.4 [D]",
                 "memory_bytes": "of 12-16 GB RAM, what an app may hold [?]", "link_mbps": _WIFI6, "link_latency_s": _WIFI_LAT,
                 "load_mbps": _LOAD}),
    "tablet": DeviceSpec(
        name="tablet", flops_per_s=1.0e12, memory_bytes=4e9, link_mbps=474.0, link_latency_s=0.0005,
        description="tablet (Apple A17 Pro class, 8 GB)",
        sources={"flops_per_s": "the phone figure x 35/45: A17 Pro Neural Engine 35 TOPS (Apple) over Snapdragon 8 Gen 3 NPU "
                                "45 TOPS (vendor figure) [?]",
                 "memory_bytes": "of 8 GB RAM, what an app may hold [?]", "link_mbps": _WIFI6, "link_latency_s": _WIFI_LAT,
                 "load_mbps": _LOAD}),
    "laptop-rtx4060": DeviceSpec(
        name="laptop-rtx4060", flops_per_s=9.1e12, memory_bytes=7e9, link_mbps=513.0, link_latency_s=0.0005,
        description="gaming laptop with an RTX 4060 8 GB on Wi-Fi 5",
        sources={"flops_per_s": "Llama-3.1-8B Q4_0 decodes ~38 tok/s in Ollama (substrate.lol benchmarks) vs 14 tok/s on the "
                                "original Jetson Orin Nano (NVIDIA jetson-generative-ai-playground): 2.7 x 3.34 TFLOP/s [D] "
                                "(a decode ratio: likely an underestimate of compute)",
                 "memory_bytes": "8 GB VRAM less the CUDA context and display [?]",
                 "link_mbps": "Wi-Fi 5 (2x2) near the AP: 513-528 Mbps peak TCP (gameandtechfocus.com Wi-Fi 6 review)",
                 "link_latency_s": _WIFI_LAT, "load_mbps": _LOAD}),
    "jetson-orin-nano": DeviceSpec(
        name="jetson-orin-nano", flops_per_s=95 * _CLIP_B16_GFLOP * 1e9, memory_bytes=6e9, link_mbps=941.0, link_latency_s=0.00027,
        description="NVIDIA Jetson Orin Nano 8GB, original firmware (15 W)",
        sources={"flops_per_s": "CLIP ViT-B/16 at 95 images/s (NVIDIA jetson-generative-ai-playground docs/benchmarks.md) x "
                                "35.1 GFLOP per 224 px image = 3.34 TFLOP/s [D]",
                 "memory_bytes": "8 GB shared CPU/GPU memory (NVIDIA datasheet) less the OS and CUDA [?]",
                 "link_mbps": _GBE, "link_latency_s": _GBE_LAT, "load_mbps": _LOAD}),
    "jetson-orin-nano-super": DeviceSpec(
        name="jetson-orin-nano-super", flops_per_s=161 * _CLIP_B16_GFLOP * 1e9, memory_bytes=6e9, link_mbps=941.0,
        link_latency_s=0.00027, description="NVIDIA Jetson Orin Nano 8GB, 'Super' firmware (25 W)",
        sources={"flops_per_s": "CLIP ViT-B/16 at 161 images/s on the Super firmware (NVIDIA jetson-generative-ai-playground "
                                "docs/benchmarks.md) x 35.1 GFLOP = 5.65 TFLOP/s [D]",
                 "memory_bytes": "8 GB shared CPU/GPU memory (NVIDIA datasheet) less the OS and CUDA [?]",
                 "link_mbps": _GBE, "link_latency_s": _GBE_LAT, "load_mbps": _LOAD}),
    "jetson-agx-orin": DeviceSpec(
        name="jetson-agx-orin", flops_per_s=95 * _CLIP_B16_GFLOP * 1e9 * 275 / 40, memory_bytes=56e9, link_mbps=941.0,
        link_latency_s=0.00027, description="NVIDIA Jetson AGX Orin 64GB",
        sources={"flops_per_s": "the Orin Nano figure x 275/40, the ratio of sparse INT8 TOPS (MLCommons inference v4.1 Orin "
                                "README; NVIDIA Orin Nano datasheet) [?]",
                 "memory_bytes": "64 GB LPDDR5 (MLCommons inference v4.1 Orin README) less the OS [?]",
                 "link_mbps": _GBE, "link_latency_s": _GBE_LAT, "load_mbps": _LOAD}),
    "rpi5": DeviceSpec(
        name="rpi5", flops_per_s=0.4 * 4 * 2.4e9 * 16, memory_bytes=6e9, link_mbps=941.0, link_latency_s=0.00027,
        description="Raspberry Pi 5 8GB, CPU only",
        sources={"flops_per_s": "4 Cortex-A76 at 2.4 GHz (circuitdigest.com) x 16 FP32 FLOP/cycle = 154 GFLOP/s peak [D], "
                                "40 % sustained [?]",
                 "memory_bytes": "8 GB LPDDR4X less the OS [?]; single-board computers run up to ~1.5 B-parameter models "
                                 "reliably (arXiv 2511.07425)",
                 "link_mbps": _GBE, "link_latency_s": _GBE_LAT, "load_mbps": _LOAD}),
}

#: ``relative_speed`` 1.0 = this many FLOP/s (the ``jetson-orin-nano`` preset)
REFERENCE_FLOPS_PER_S: float = PRESETS["jetson-orin-nano"].flops_per_s

#: named, ordered device lists (pipeline order)
CLUSTERS: dict[str, tuple[str, ...]] = {
    "home-4": ("laptop-rtx4060", "jetson-orin-nano", "tablet", "phone"),
    "jetson-3": ("jetson-orin-nano-super", "jetson-orin-nano", "jetson-orin-nano"),
}


def _unique(names: list[str]) -> list[str]:
    """``a, a, b`` -> ``a, a#2, b``."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _unknown(kind: str, name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; known: {', '.join(choices)}"


def _entry(item: Any, where: str) -> dict[str, Any]:
    """One ``devices`` entry (a preset name or a mapping) -> the fields of a DeviceSpec."""
    if isinstance(item, str):
        if item not in PRESETS:
            raise UserInputError(f"{where}: {_unknown('device preset', item, sorted(PRESETS))}")
        return PRESETS[item].model_dump()
    if not isinstance(item, dict):
        raise UserInputError(f"{where}: expected a preset name or a mapping, got {type(item).__name__}")
    fields = dict(item)
    preset = fields.pop("preset", None)
    if preset is None:
        return fields
    if not isinstance(preset, str) or preset not in PRESETS:
        raise UserInputError(f"{where}.preset: {_unknown('device preset', str(preset), sorted(PRESETS))}")
    base = PRESETS[preset].model_dump()
    if "relative_speed" in fields:
        base.pop("flops_per_s")
    for key in fields:
        base["sources"].pop("flops_per_s" if key == "relative_speed" else key, None)
    base.update(fields)
    return base


def _cluster(devices: list[Any], links: Any, source: str) -> EdgeCluster:
    entries = [_entry(item, f"{source}: devices.{k}") for k, item in enumerate(devices)]
    # a preset used twice without a name of its own becomes "preset", "preset#2"; names given twice are an error
    named = [isinstance(item, dict) and "name" in item for item in devices]
    for k, (e, name) in enumerate(zip(entries, _unique([str(e.get("name", "")) for e in entries]))):
        if "name" in e and not named[k]:
            e["name"] = name
    try:
        return EdgeCluster.model_validate({"devices": entries, "links": links})
    except ValidationError as e:
        raise UserInputError(format_validation_error(source, e)) from None


def load_devices(path: str | Path) -> EdgeCluster:
    """Read ``devices.yaml`` (see the module docstring); errors are one line naming file and field."""
    p = Path(path)
    try:
        data: Any = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserInputError(f"{p}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise UserInputError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    links = None
    if isinstance(data, dict):
        extra = sorted(set(data) - {"devices", "links"})
        if extra:
            raise UserInputError(f"{p}: {extra[0]}: unknown key (expected devices and optionally links)")
        links = data.get("links")
        data = data.get("devices")
    if not isinstance(data, list) or not data:
        raise UserInputError(f"{p}: devices: expected a non-empty list of devices or preset names")
    return _cluster(data, links, str(p))


def resolve_devices(spec: str) -> EdgeCluster:
    """A ``devices.yaml`` path, a cluster preset (``home-4``) or comma-separated device presets."""
    p = Path(spec)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        return load_devices(p)
    names: list[str] = []
    for part in (s.strip() for s in spec.split(",")):
        if part in CLUSTERS:
            names.extend(CLUSTERS[part])
        elif part in PRESETS:
            names.append(part)
        else:
            raise UserInputError(f"devices: {_unknown('device or cluster preset', part, sorted(PRESETS) + sorted(CLUSTERS))} "
                                 "(or give a devices.yaml)")
    return _cluster(names, None, "devices")
