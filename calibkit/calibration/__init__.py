"""Calibrators over an n×K matrix of class scores, each a scikit-learn classifier.

- scaling: :class:`TemperatureScaling`, :class:`VectorScaling`,
  :class:`MatrixScaling`, :class:`PlattScaling`;
- binning: :class:`IsotonicCalibration`, :class:`HistogramBinning`;
- prior corrections, no labels needed: :class:`ContextualCalibration`,
  :class:`DomainContextCalibration`, :class:`BatchCalibration`;
- cross-fitting: :func:`cross_val_calibrate`, :class:`CrossFitCalibration`;
- :class:`BaseCalibrator`, the base that checks a calibrator's input, for a calibrator of your own.

The kind of X is a constructor argument, ``input="logprobs"`` (the default:
unnormalised log-scores such as the core's LabelScores, or logits) or
``input="probs"``; rows are renormalised either way.
"""

from ._base import BaseCalibrator
from .binning import HistogramBinning, IsotonicCalibration
from .crossfit import CrossFitCalibration, cross_val_calibrate
from .prior import BatchCalibration, ContextualCalibration, DomainContextCalibration
from .scaling import MatrixScaling, PlattScaling, TemperatureScaling, VectorScaling

__all__ = [
    "TemperatureScaling",
    "VectorScaling",
    "MatrixScaling",
    "PlattScaling",
    "IsotonicCalibration",
    "HistogramBinning",
    "ContextualCalibration",
    "DomainContextCalibration",
    "BatchCalibration",
    "CrossFitCalibration",
    "cross_val_calibrate",
    "BaseCalibrator",
]
