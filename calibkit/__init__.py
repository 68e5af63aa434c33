"""calibkit: classify text with base language models by their next-token
probabilities, and calibrate those probabilities.

>>> import calibkit as ck
>>> model = ck.LocalModel()                                   # doctest: +SKIP
>>> scores = ck.score(["a gorgeous film"], "Review: {text}\\nSentiment:",
...                   {"negative": " negative", "positive": " positive"}, model)  # doctest: +SKIP
"""

from . import diagrams, metrics
from .api import APIError, CompletionRequest, CompletionResponse, InvalidRequestError
from .backends import Backend, Client, LocalModel
from .cache import ResponseCache
from .calibration import (
    BatchCalibration,
    ContextualCalibration,
    CrossFitCalibration,
    DomainContextCalibration,
    HistogramBinning,
    IsotonicCalibration,
    MatrixScaling,
    PlattScaling,
    TemperatureScaling,
    VectorScaling,
    cross_val_calibrate,
)
from .diagrams import plot_reliability, plot_reliability_grid, reliability_data
from .estimator import LogprobClassifier, LogprobVectorizer, make_calibrator
from .scoring import LabelScores, TokenizationError, score
from .templates import PromptTemplate, TokenizationTrap, TokenizationWarning, Verbalizer, check_traps

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "Backend",
    "BatchCalibration",
    "Client",
    "CompletionRequest",
    "CompletionResponse",
    "ContextualCalibration",
    "CrossFitCalibration",
    "DomainContextCalibration",
    "HistogramBinning",
    "InvalidRequestError",
    "IsotonicCalibration",
    "LabelScores",
    "LocalModel",
    "LogprobClassifier",
    "LogprobVectorizer",
    "MatrixScaling",
    "PlattScaling",
    "PromptTemplate",
    "ResponseCache",
    "TemperatureScaling",
    "TokenizationError",
    "TokenizationTrap",
    "TokenizationWarning",
    "VectorScaling",
    "Verbalizer",
    "check_traps",
    "cross_val_calibrate",
    "diagrams",
    "make_calibrator",
    "metrics",
    "plot_reliability",
    "plot_reliability_grid",
    "reliability_data",
    "score",
]
