"""All MAS features of one request, as the named dict the trace schema and ``ObservationSpec`` use.

:func:`compute_mas` returns values in [0, 1] only (so they can be stored in a trace):

==========================  ======================================================================
name                        meaning (see :mod:`.spatial`, :mod:`.temporal`, :mod:`.audio`, :mod:`.text`)
==========================  ======================================================================
``score``                   joint MAS score, :func:`~.joint.joint_score` of the four below
``spatial``                 mean spatial density over the images (or up to 4 video frames)
``temporal``                temporal novelty of the video, 0 without video
``audio``                   voiced fraction, 0 without audio
``text``                    text density of the prompt
``spatial_patch_active``    share of active grid cells (1 - patch sparsity)
``spatial_edge_density``    share of edge pixels
``spatial_entropy``         mean local grey-level entropy / 4 bits
``spatial_bpp``             JPEG bits per pixel / 3, capped at 1
``temporal_dup_share``      share of near-duplicate consecutive frames
``temporal_mad``            mean absolute frame difference / 32 levels, capped at 1
``audio_flatness``          spectral flatness of voiced frames
``text_cue``                question-type cue
``text_len``                prompt length / 64 word pieces, capped at 1
``act_density``, ...        with ``vision_hidden``: :func:`~.activations.activation_features` of
                            the images' early vision activations (``act_video_*`` for frames)
==========================  ======================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .activations import activation_features
from .audio import audio_features
from .joint import joint_score
from .spatial import spatial_features
from .temporal import temporal_features
from .text import text_features

__all__ = ["compute_mas"]

_MAX_VIDEO_SPATIAL = 4


def compute_mas(
    prompt: str,
    images: Sequence[Any] = (),
    video: Sequence[Any] | None = None,
    audio: Any = None,
    sample_rate: int | None = None,
    vision_hidden: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """MAS features of a request (see the module table).

    Args:
        prompt: the text prompt.
        images: PIL images, arrays, encoded bytes or paths.
        video: frames of one clip, oldest first.
        audio: mono samples in [-1, 1] (with ``sample_rate``), or an object with ``samples`` and
            ``sample_rate`` attributes (e.g. :class:`~mllm_offload.mllm_backends.AudioClip`).
        vision_hidden: early vision-encoder activations, one ``(tokens, hidden)`` array per image
            then per video frame, as the local backend returns them.
    """
    out: dict[str, float] = {}
    images = list(images or ())
    frames = list(video or ())
    present = {"text": True, "spatial": bool(images or frames), "temporal": len(frames) >= 2, "audio": audio is not None}

    spatial_src = images or frames[:: max(1, -(-len(frames) // _MAX_VIDEO_SPATIAL))][:_MAX_VIDEO_SPATIAL]
    if spatial_src:
        sp = [spatial_features(im, what=f"image {i}") for i, im in enumerate(spatial_src)]
        out["spatial"] = float(np.mean([s["spatial"] for s in sp]))
        out["spatial_patch_active"] = float(np.mean([s["patch_active"] for s in sp]))
        out["spatial_edge_density"] = float(np.mean([s["edge_density"] for s in sp]))
        out["spatial_entropy"] = float(np.mean([s["entropy"] for s in sp]))
        out["spatial_bpp"] = float(min(1.0, np.mean([s["jpeg_bpp"] for s in sp]) / 3.0))
    else:
        out["spatial"] = 0.0
    if frames:
        tf = temporal_features(frames)
        out["temporal"] = tf["temporal"]
        out["temporal_dup_share"] = tf["dup_share"]
        out["temporal_mad"] = float(min(1.0, tf["frame_mad"] / 32.0))
    else:
        out["temporal"] = 0.0
    if audio is not None:
        if hasattr(audio, "samples") and hasattr(audio, "sample_rate"):
            samples, sr = audio.samples, int(audio.sample_rate)
        else:
            if sample_rate is None:
                raise ValueError("audio given as samples needs sample_rate")
            samples, sr = audio, int(sample_rate)
        af = audio_features(samples, sr)
        out["audio"] = af["audio"]
        out["audio_flatness"] = af["spectral_flatness"]
    else:
        out["audio"] = 0.0
    tx = text_features(prompt)
    out["text"] = tx["text"]
    out["text_cue"] = tx["question_cue"]
    out["text_len"] = float(min(1.0, tx["text_tokens"] / 64.0))
    if vision_hidden:
        hidden = list(vision_hidden)
        img_h, vid_h = hidden[: len(images)], hidden[len(images):]
        for prefix, hs in (("act", img_h), ("act_video", vid_h)):
            if hs:
                af2 = activation_features(hs)
                out[f"{prefix}_density"] = af2["act_density"]
                out[f"{prefix}_hoyer"] = af2["act_hoyer"]
                out[f"{prefix}_inactive"] = af2["act_inactive"]
    out["score"] = joint_score(out, present)
    return {k: float(min(max(v, 0.0), 1.0)) for k, v in out.items()}
