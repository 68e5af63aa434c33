"""calibkit: classify text with base language models by their next-token
probabilities, and calibrate those probabilities.

>>> import calibkit as ck
>>> model = ck.LocalModel()                                   # doctest: +SKIP
>>> scores = ck.score(["a gorgeous film"], "Review: {text}\\nSentiment:",
...                   {"negative": " negative", "positive": " positive"}, model)  # doctest: +SKIP
"""

from . import diagrams, metrics
from .api import APIError, CompletionRequest, CompletionResponse, InvalidRequestError
from .backends import Backend, Client, Continuation, LocalModel
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
from .label_scores import LabelScores, read_scores, write_scores
from .scoring import TokenizationError, content_free_scores, domain_context_scores, random_domain_texts, score
from .templates import PromptTemplate, TokenizationTrap, TokenizationWarning, Verbalizer, check_traps

from .version import __version__

__all__ = [
    "__version__",
    "APIError",
    "Backend",
    "BatchCalibration",
    "Client",
    "Continuation",
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
    "content_free_scores",
    "cross_val_calibrate",
    "diagrams",
    "domain_context_scores",
    "make_calibrator",
    "metrics",
    "plot_reliability",
    "plot_reliability_grid",
    "random_domain_texts",
    "read_scores",
    "reliability_data",
    "score",
    "write_scores",
]
