"""sedmon_core: Spectral Edge Dynamics math and wire schemas (pure functions, no I/O).

>>> import numpy as np
>>> from sedmon_core import window_spectrum
>>> deltas = np.random.default_rng(0).normal(size=(10, 300))
>>> window_spectrum(deltas @ deltas.T).signal_rank >= 1
True
"""

from sedmon_core.spectrum import (
    RANK_RULES,
    WindowSpectrum,
    consecutive_ratios,
    gram_of_deltas,
    noise_floor,
    roll_gram,
    signal_rank,
    singular_values,
    spectrum_series,
    window_spectra,
    window_spectrum,
    window_steps,
)

__all__ = [
    "RANK_RULES",
    "WindowSpectrum",
    "consecutive_ratios",
    "gram_of_deltas",
    "noise_floor",
    "roll_gram",
    "signal_rank",
    "singular_values",
    "spectrum_series",
    "window_spectra",
    "window_spectrum",
    "window_steps",
]
__version__ = "0.1.0"
