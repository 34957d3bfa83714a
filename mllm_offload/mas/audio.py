"""Audio MAS: how much of a clip is active sound.

The clip is cut into 20 ms frames. A frame is *voiced* when its RMS level is above
``max(SILENCE_DBFS, noise_floor + 10 dB)``, the noise floor being the 10th percentile of frame
levels (so constant background hum does not count as activity).

=====================  ======  ===================================================================
feature                range   definition
=====================  ======  ===================================================================
``voiced_fraction``    [0, 1]  share of voiced frames
``spectral_flatness``  [0, 1]  mean over voiced frames of geometric / arithmetic mean of the power
                               spectrum (1 = white noise, near 0 = tonal); 0 when nothing is voiced
``audio``              [0, 1]  activity = ``voiced_fraction``
=====================  ======  ===================================================================

Silence scores 0; continuous speech-like (modulated noise) sound close to 1.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserInputError

__all__ = ["FRAME_S", "SILENCE_DBFS", "audio_features"]

FRAME_S = 0.02
SILENCE_DBFS = -45.0


def audio_features(samples: np.ndarray, sample_rate: int, what: str = "audio") -> dict[str, float]:
    """Audio MAS features of a mono clip in [-1, 1] at ``sample_rate`` Hz (see the module table)."""
    if sample_rate <= 0:
        raise UserInputError(f"{what}: sample_rate must be > 0, got {sample_rate}")
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise UserInputError(f"{what}: samples must be finite")
    n = max(1, round(FRAME_S * sample_rate))
    m = len(x) // n
    if m == 0:
        return {"voiced_fraction": 0.0, "spectral_flatness": 0.0, "audio": 0.0}
    fr = x[: m * n].reshape(m, n)
    rms = np.sqrt(np.mean(fr.astype(np.float64) ** 2, axis=1))
    db = 20.0 * np.log10(np.maximum(rms, 1e-10))
    floor = float(np.percentile(db, 10))
    voiced = db > max(SILENCE_DBFS, floor + 10.0) if floor > SILENCE_DBFS else db > SILENCE_DBFS
    vf = float(voiced.mean())
    flat = 0.0
    if voiced.any():
        spec = np.abs(np.fft.rfft(fr[voiced] * np.hanning(n).astype(np.float32), axis=1)) ** 2 + 1e-12
        flat = float(np.mean(np.exp(np.mean(np.log(spec), axis=1)) / np.mean(spec, axis=1)))
    return {"voiced_fraction": vf, "spectral_flatness": flat, "audio": vf}
