"""calibkit: classify text with base language models by their next-token
probabilities, and calibrate those probabilities.

>>> import calibkit as ck
>>> model = ck.LocalModel()                                   # doctest: +SKIP
>>> scores = ck.score(["a gorgeous film"], "Review: {text}\\nSentiment:",
...                   {"negative": " negative", "positive": " positive"}, model)  # doctest: +SKIP
"""

from .api import APIError, CompletionRequest, CompletionResponse, InvalidRequestError
from .backends import Backend, Client, LocalModel
from .cache import ResponseCache
from .scoring import LabelScores, TokenizationError, score
from .templates import PromptTemplate, TokenizationTrap, TokenizationWarning, Verbalizer, check_traps

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "Backend",
    "Client",
    "CompletionRequest",
    "CompletionResponse",
    "InvalidRequestError",
    "LabelScores",
    "LocalModel",
    "PromptTemplate",
    "ResponseCache",
    "TokenizationError",
    "TokenizationTrap",
    "TokenizationWarning",
    "Verbalizer",
    "check_traps",
    "score",
]
