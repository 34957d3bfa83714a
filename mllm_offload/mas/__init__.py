"""MAS (Modality Activation Sparsity) features; for now the joint score that combines them."""

from .joint import JOINT_WEIGHTS, joint_score, joint_score_array

__all__ = ["JOINT_WEIGHTS", "joint_score", "joint_score_array"]
