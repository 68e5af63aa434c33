"""calibkit: classify text with base language models by their next-token
probabilities, and calibrate those probabilities.

>>> import calibkit as ck
>>> model = ck.LocalModel()                                   # doctest: +SKIP
>>> scores = ck.score(["a gorgeous film"], "Review: {text}\\nSentiment:",
...                   {"negative": " negative", "positive": " positive"}, model)  # doctest: +SKIP

The names below are imported on first use (PEP 562), so ``import calibkit`` and
``calibkit --help`` stay fast: scikit-learn, pandas, httpx and llama.cpp load only
when a name that needs them is touched.

>>> sorted(n for n in ck.__all__ if n.endswith("Scaling"))
['MatrixScaling', 'PlattScaling', 'TemperatureScaling', 'VectorScaling']

A study (:class:`Study`) is the usual start: templates × verbalizers × models ×
calibrators, scored once and compared on one held-out split. The wire types of the
completions API (``CompletionRequest``, ``InvalidRequestError`` ...) are in
:mod:`calibkit.api`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "APIError": "api",
    **dict.fromkeys(["Backend", "Client", "Continuation", "LocalModel", "RayPool", "TransformersModel"], "backends"),
    **dict.fromkeys(["CacheError", "CacheFullError", "ResponseCache"], "cache"),
    "MalformedResponseError": "backends.http",
    **dict.fromkeys(
        [
            "BatchCalibration", "ContextualCalibration", "CrossFitCalibration", "DomainContextCalibration",
            "HistogramBinning", "IsotonicCalibration", "MatrixScaling", "PlattScaling", "TemperatureScaling",
            "VectorScaling", "cross_val_calibrate",
        ],
        "calibration",
    ),
    "compare": "comparison",
    "conclude": "conclusion",
    "load_dataset": "datasets",
    **dict.fromkeys(["plot_reliability", "plot_reliability_grid", "reliability_data"], "diagrams"),
    **dict.fromkeys(["LogprobClassifier", "LogprobVectorizer", "make_calibrator"], "estimator"),
    "evaluate": "evaluation",
    **dict.fromkeys(["FormSearch", "search_forms"], "form_search"),
    **dict.fromkeys(["LabelScores", "read_scores", "write_scores"], "label_scores"),
    **dict.fromkeys(
        ["TokenizationError", "content_free_scores", "domain_context_scores", "random_domain_texts", "score"],
        "scoring",
    ),
    **dict.fromkeys(["Study", "StudyResults"], "study"),
    **dict.fromkeys(["ReportFolderError", "write_report"], "report"),
    **dict.fromkeys(["PromptTemplate", "TokenizationTrap", "TokenizationWarning", "Verbalizer", "check_traps"],
                    "templates"),
}
_SUBMODULES = ("conformal", "diagrams", "metrics", "selective")

__all__ = sorted(["__version__", *_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module 'calibkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

