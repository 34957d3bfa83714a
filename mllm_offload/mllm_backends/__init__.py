"""MLLM backends: the ``Backend`` protocol and its implementations (stage 1).

Public names: :class:`MMRequest`, :class:`Generation`, :class:`TokenEvent`, :class:`CancelToken`,
:class:`AudioClip`, :class:`BackendError`, :class:`Backend`, :func:`load_image`,
:func:`confidence_from_logprobs`. Implementations are imported from their modules so that
optional dependencies load only when used: ``hf_local.HFLocalBackend`` (transformers),
``openai_compat.OpenAICompatBackend`` (httpx), ``serve`` (FastAPI + uvicorn);
``openai_protocol`` holds the OpenAI wire format (pydantic models, SSE, errors, guard) that
``serve`` and ``runtime.server`` share (FastAPI + prometheus-client).
"""

from .base import AudioClip, Backend, BackendError, CancelToken, Generation, MMRequest, TokenEvent, load_image
from .confidence import CONFIDENCE_METHODS, confidence_from_logprobs

__all__ = [
    "CONFIDENCE_METHODS",
    "AudioClip",
    "Backend",
    "BackendError",
    "CancelToken",
    "Generation",
    "MMRequest",
    "TokenEvent",
    "confidence_from_logprobs",
    "load_image",
]
