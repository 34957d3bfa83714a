"""MAS (Modality Activation Sparsity) features (stage 1).

Public names: :func:`compute_mas` (all features of a request, the named dict of the trace
schema), the per-modality :func:`spatial_features`, :func:`temporal_features` (and per frame :func:`frame_novelty`),
:func:`audio_features`, :func:`text_features`, :func:`activation_features`, and the joint score
(:data:`JOINT_WEIGHTS`, :func:`joint_score`, :func:`joint_score_array`). Needs numpy and, for
images, Pillow; nothing heavier.
"""

from .activations import activation_features
from .audio import audio_features
from .features import compute_mas
from .joint import JOINT_WEIGHTS, joint_score, joint_score_array
from .spatial import spatial_features
from .temporal import frame_novelty, temporal_features
from .text import text_features

__all__ = [
    "JOINT_WEIGHTS",
    "activation_features",
    "audio_features",
    "compute_mas",
    "frame_novelty",
    "joint_score",
    "joint_score_array",
    "spatial_features",
    "temporal_features",
    "text_features",
]
