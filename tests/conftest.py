"""Shared fixtures: the embedded model and the same weights under transformers (each loaded
once), llama-cpp-python's own Llama over the same file (the reference), an in-memory
backend and a scripted HTTP server on 127.0.0.1 (both in helpers.py), and the command line tests' data
files and model stand-ins (cli_tools.py)."""

from __future__ import annotations

import pytest

from cli_tools import NamedBackend, open_with, template_score
from helpers import ScriptedServer, TableBackend


@pytest.fixture(scope="session")
def _models_folder(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, _models_folder) -> None:
    # Backends made with the default cache write under a test folder, never ~/.cache;
    # the embedded model's GGUF (assembled into <cache>/models, 253 MB) once per session.
    cache = tmp_path_factory.mktemp("cache")
    (cache / "models").symlink_to(_models_folder, target_is_directory=True)
    monkeypatch.setenv("CALIBKIT_CACHE_DIR", str(cache))


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory, _models_folder):
    """The session's cache folder: its models/ is every test's models/, and its response cache
    holds the answers of questions that several tests ask alike (the bundled sets' scores, the
    README's commands, calibkit eval on SST-2), so that each is asked of the model once."""
    cache = tmp_path_factory.mktemp("session-cache")
    (cache / "models").symlink_to(_models_folder, target_is_directory=True)
    return cache


@pytest.fixture(scope="session")
def local_model(session_cache):
    from calibkit import LocalModel

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CALIBKIT_CACHE_DIR", str(session_cache))
        return LocalModel(cache=False)


@pytest.fixture(scope="session")
def hf_model_load(session_cache):
    """The bundled GGUF under transformers, loaded now, with what its load said: ``.model``, ``.steps``
    (the messages of the ``calibkit.steps`` logger during the load) and ``.converted`` (whether this
    load converted the GGUF, i.e. no earlier test of the session had). The session's one conversion
    happens here, so its steps are checked without a second one."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import logging
    from types import SimpleNamespace

    from calibkit import TransformersModel
    from calibkit.backends.transformers import converted_gguf_folder
    from calibkit.progress import STEPS

    class Kept(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    kept, level = Kept(), STEPS.level
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CALIBKIT_CACHE_DIR", str(session_cache))
        model = TransformersModel(cache=False, progress=False)
        converted_before = (converted_gguf_folder(model.source) / ".converted").is_file()
        STEPS.addHandler(kept)
        STEPS.setLevel(logging.INFO)
        try:
            model.engine
        finally:
            STEPS.removeHandler(kept)
            STEPS.setLevel(level)
    return SimpleNamespace(model=model, steps=kept.messages, converted=not converted_before)


@pytest.fixture(scope="session")
def hf_model(hf_model_load):
    """The bundled GGUF under transformers, dequantized to float32 (converted once per session, into
    the models folder every test shares: a TransformersModel() made in a test loads the same one)."""
    return hf_model_load.model


@pytest.fixture(scope="session")
def reference_llama(local_model):
    """llama.cpp through llama-cpp-python's high-level class, set up like the engine
    (the same batch size and attention kernel, so the same arithmetic)."""
    import llama_cpp

    from calibkit.backends.llamacpp.engine import loads_as_the_engine

    with loads_as_the_engine():
        return llama_cpp.Llama(
            local_model.model_path, n_ctx=2048, n_batch=local_model.n_batch, n_ubatch=local_model.n_batch,
            flash_attn=True, logits_all=True, verbose=False,
        )


@pytest.fixture(scope="session")
def cached_model(local_model, session_cache):
    """The embedded model answering through the session's response cache: the questions several
    tests ask alike (a bundled set's scores, the first SST-2 dev examples) are asked of it once,
    and ``calibkit eval`` run on the session's cache finds them."""
    import calibkit as ck
    from calibkit.cache import ResponseCache

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CALIBKIT_CACHE_DIR", str(session_cache))
        model = ck.LocalModel(cache=ResponseCache(session_cache / "responses.sqlite"))
    assert model.identity == local_model.identity
    return model


@pytest.fixture(scope="session")
def bundled_scores(cached_model):
    """``bundled_scores(name)``: a bundled data set scored by the embedded model, and its
    content-free scores (``(dataset, scores, content_free)``), each set scored once per session
    for every test that reads the same numbers (conformal coverage, selective thresholds)."""
    import calibkit as ck
    from calibkit.datasets import load_dataset

    done: dict = {}

    def scored(name: str):
        if name not in done:
            ds = load_dataset(name)
            scores = ck.score(ds.X, ds.template, ds.verbalizer, cached_model, progress=False)
            cf = ck.content_free_scores(ds.template, ds.verbalizer, cached_model, progress=False)
            done[name] = (ds, scores, cf)
        return done[name]

    return scored


@pytest.fixture
def table_backend() -> type[TableBackend]:
    return TableBackend


@pytest.fixture
def scripted_server():
    s = ScriptedServer()
    yield s
    s.close()


# -- the command line's tests (tests/cli): data files and model stand-ins ---------------------

@pytest.fixture
def reviews(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("review,stars\nA wonderful film.,good\nA boring mess.,bad\nLoved it.,good\nAwful.,bad\n")
    return data


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command gets as far as building its model."""
    def touched(*args, **kwargs):
        raise AssertionError("the model was built before every flag was checked")

    open_with(monkeypatch, touched)


@pytest.fixture
def sorted_reviews(tmp_path):
    """A file sorted by label, as many public files are: the first rows are all 'bad'."""
    data = tmp_path / "sorted.csv"
    bad = ["Awful.", "A boring mess.", "Dull and long.", "I hated it.", "A waste of time.", "Terrible acting."]
    good = ["A wonderful film.", "Loved it.", "A joy.", "Brilliant and warm.", "Superb.", "Great fun."]
    data.write_text("review,stars\n" + "".join(f"{t},bad\n" for t in bad) + "".join(f"{t},good\n" for t in good))
    return data


# -- rows with no text or no label: an error naming the lines, or --drop-missing ----------
@pytest.fixture
def gappy_reviews(tmp_path):
    """Reviews with an empty text cell (line 3), a blank one (line 5) and no label (line 6)."""
    data = tmp_path / "gappy.csv"
    data.write_text("review,stars\nAwful.,bad\n,bad\nGreat fun.,good\n   ,good\nFine.,\n"
                    "Loved it.,good\nDull.,bad\nA bore.,bad\nSuperb.,good\n")
    return data


@pytest.fixture
def fake_models(monkeypatch):
    import calibkit.scoring

    calls: list[str] = []
    import calibkit.study

    monkeypatch.setattr(calibkit.scoring, "score", template_score(calls))
    monkeypatch.setattr(calibkit.study, "score", template_score(calls))
    open_with(monkeypatch, lambda model=None, **kw: NamedBackend(model))
    return calls
