"""Zero-shot SST-2 over llama-cpp-python's server: calibkit exact against lm-evaluation-harness.

    python benchmarks/bench_lmeval.py [--n 2]

Needs the bench extra (``pip install -e '.[bench]'``: lm-eval, and transformers with
gguf for lm-eval's tokenizer); without it, it prints why and a skipped row. Runs
offline: nothing is downloaded (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1).

The first N reviews of ../shared/data/sst2/dev.txt, as in bench_scoring.py, with its
template "Review: {text}\nSentiment:" and forms " negative" / " positive", are scored
through one llama-cpp-python server (``python -m llama_cpp.server``, run as
``calibkit.backends.llamacpp.llama_server`` so that it loads the model as the embedded
engine does; the embedded GGUF, n_batch = n_ubatch = 64, flash attention on, n_threads = the machine's cores,
logits_all for echo, n_ctx = the longest prompt rounded up to 64 tokens) on a free
port of 127.0.0.1:

- lm-eval: ``lm_eval.simple_evaluate`` on the local task in benchmarks/lmeval_task/
  (multiple_choice over a JSONL of the examples written to a temporary folder) with
  the ``local-completions`` model: one echo request per example and form
  (``num_concurrent=1``, batch size 1, ``tokenized_requests=False``); the tokenizer it
  counts the context's tokens with is made from the GGUF by transformers;
- calibkit exact: ``ck.score(..., ck.Client(url, cache=False), method="exact")``, the
  same question (log P(form | prompt) from an echo answer), one prompt per request and
  one request in flight, as llama-cpp-python's server takes them;
- calibkit top-k, k = 20 (one ``max_tokens=1`` request per example), for context.

Each is timed around its call alone (the server, the tokenizer and lm-eval's model
object are made before). It prints examples/s and accuracy of each, on how many
examples lm-eval and calibkit exact predict the same label, and the largest
difference of their log-likelihoods; then calibkit exact with the embedded model
(``ck.LocalModel``, the same llama.cpp settings, in process), for context.

N is 2 by default, not bench_scoring.py's 300, to keep the run within minutes:
llama-cpp-python's server takes seconds for each echo request (for every prompt
token it sorts the whole 262k-token vocabulary in Python to build top_logprobs,
whatever ``logprobs`` asks), so the server's time dominates both figures, and the
ratio is in effect that of the echo requests each sends, which it prints (counted in
the server's access log): lm-eval one per form, calibkit exact one per form and one
of the prompt alone (its seam check). ``--n 300`` scores bench_scoring.py's examples
(hours on two cores).
"""

from __future__ import annotations

import os

# Before lm_eval imports datasets and huggingface_hub, which read these at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import importlib.util
import json
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np

import calibkit as ck
from bench_scoring import DEFAULT_DATA, FORMS, TEMPLATE, load
from calibkit.backends.llamacpp import default_model_path
from rows import row

HERE = Path(__file__).resolve().parent
TASK_YAML = HERE / "lmeval_task" / "sst2_calibkit.yaml"
TASK = "sst2_calibkit"
ROW_WHAT = "zero-shot SST-2 over llama-cpp-python's server, calibkit exact vs lm-eval"
# For context, no goal: this server's cost is per echo request, and calibkit sends one more per
# example than lm-eval (the prompt alone: the seam check that lm-eval's local tokenizer stands in for).
ROW_GOAL = ""
MODEL_NAME = "gemma-3-270m"
N_BATCH = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_cpp_server(model: Path, log: Path, n_ctx: int) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on a free port; yields its /v1 URL, stops it on exit."""
    port = free_port()
    threads = str(os.cpu_count() or 1)
    cmd = [sys.executable, "-m", "calibkit.backends.llamacpp.llama_server", "--model", str(model),
           "--model_alias", MODEL_NAME,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
           "--n_batch", str(N_BATCH), "--n_ubatch", str(N_BATCH), "--flash_attn", "true",
           "--n_threads", threads, "--n_threads_batch", threads,
           # echo answers carry every prompt token's logprob, which needs the logits of all positions
           "--logits_all", "true", "--verbose", "false"]
    url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(url + "/models", timeout=1).status_code == 200:
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited at start:\n{log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not answer in 120 s:\n{log.read_text()[-2000:]}")
                time.sleep(0.25)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def gguf_tokenizer(model: Path, out: Path, prompts: list[str]) -> tuple[Path, int]:
    """The GGUF's tokenizer as a Hugging Face tokenizer folder, for lm-eval, made offline.

    With ``tokenized_requests=False`` lm-eval tokenizes context and continuation,
    decodes them back to the text it sends, and takes the answer's logprobs from the
    context's token count on: that text must come back unchanged, which is checked.
    Returns the folder and the longest prompt's length in tokens.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name)
    tok.save_pretrained(out)
    ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
    bad = [p for p, i in zip(prompts, ids) if tok.decode(i) != p]
    if bad:
        raise RuntimeError(f"the GGUF tokenizer does not decode {len(bad)} prompts back unchanged, e.g. {bad[0]!r}")
    return out, max(map(len, ids))


def task_folder(folder: Path, texts: list[str], labels: np.ndarray) -> Path:
    """A folder for lm-eval's TaskManager: the examples as JSONL, and a task YAML that includes
    benchmarks/lmeval_task/ and names that file."""
    data = folder / "sst2.jsonl"
    with data.open("w") as f:
        for text, label in zip(texts, labels):
            f.write(json.dumps({"text": text, "label": int(label)}) + "\n")
    (folder / f"{TASK}.yaml").write_text(
        f"include: {json.dumps(str(TASK_YAML))}\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
    )
    return folder


def lmeval_model(url: str, tokenizer: Path) -> Any:
    from lm_eval.api.registry import get_model

    return get_model("local-completions").create_from_arg_obj({
        "base_url": url + "/completions",
        "model": MODEL_NAME,
        "tokenizer_backend": "huggingface",
        "tokenizer": str(tokenizer),
        "tokenized_requests": False,
        "num_concurrent": 1,
        "max_retries": 3,
    })


def run_lmeval(lm: Any, tasks: Path, n: int) -> tuple[float, float, np.ndarray]:
    """Seconds, accuracy, and the (n, 2) log-likelihoods of the forms from lm-eval's per-sample log."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    t = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=manager, num_fewshot=0,
                                  log_samples=True)
    seconds = time.perf_counter() - t
    ll = np.full((n, len(FORMS)), np.nan)
    for s in out["samples"][TASK]:
        ll[s["doc_id"]] = [r[0] for r in s["filtered_resps"]]
    return seconds, float(out["results"][TASK]["acc,none"]), ll


def run_calibkit(texts: list[str], backend: ck.Backend, method: str) -> tuple[float, np.ndarray, np.ndarray]:
    """Seconds, class logprobs (n, 2), and the forms' log-likelihoods (n, 2)."""
    t = time.perf_counter()
    scores = ck.score(texts, TEMPLATE, FORMS, backend, method=method, progress=False, check=False)
    return time.perf_counter() - t, scores.logprobs, scores.form_logprobs


def served(log: Path) -> int:
    """Completions requests the server has answered so far, by its access log."""
    return log.read_text(errors="replace").count('"POST /v1/completions HTTP')


def report(name: str, n: int, seconds: float, acc: float, requests: int | None = None) -> float:
    rate = n / seconds
    sent = f", {requests} requests" if requests is not None else ""
    print(f"{name:34s} accuracy {acc:.3f}   {rate:7.3f} examples/s   ({seconds:.1f} s{sent})", flush=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2, help="examples to score (default 2; see above)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 'label sentence' file")
    args = ap.parse_args()
    # A SIGTERM (run_all.py or make interrupted) unwinds like an exception, so that the server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    missing = [m for m in ("lm_eval", "transformers", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (pip install -e '.[bench]')"
        print(f"lm-eval not run: {reason}")
        print(row(ROW_WHAT, f"skipped: {reason}", ROW_GOAL, None))
        return
    # lm-eval logs its progress at INFO and warns of every unused default; its tqdm bars go to stderr.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    texts, y = load(args.data, args.n)
    n = len(texts)
    model = default_model_path()
    prompts = [TEMPLATE.format(text=t) + form for t in texts for form in FORMS.values()]
    print(f"{n} examples of {args.data}; server: llama_cpp.server, {model.name}, n_batch = n_ubatch = {N_BATCH}, "
          f"flash attention, {os.cpu_count()} threads", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_lmeval_") as tmp_name:
        tmp = Path(tmp_name)
        # datasets' cache of the JSONL, gone with the folder (read when lm_eval first imports datasets, below)
        os.environ["HF_DATASETS_CACHE"] = str(tmp / "hf_datasets")
        tokenizer, longest = gguf_tokenizer(model, tmp / "tokenizer", prompts)
        # The server log-softmaxes all n_ctx rows of its logits for every echo answer: no more than needed.
        n_ctx = -(-(longest + 2) // 64) * 64
        (tmp / "tasks").mkdir()
        tasks = task_folder(tmp / "tasks", texts, y)
        log = tmp / "server.log"
        with llama_cpp_server(model, log, n_ctx) as url:
            lm = lmeval_model(url, tokenizer)
            with ck.Client(url, model=MODEL_NAME, cache=False, logprobs_cap=None, max_prompts_per_request=1,
                           max_in_flight=1, echo_max_tokens=1) as client:
                run_calibkit(texts[:1], client, "topk")  # warm-up: the server's first request is slower

                before = served(log)
                le_s, le_acc, le_ll = run_lmeval(lm, tasks, n)
                le_req = served(log) - before
                le = report("lm-eval local-completions", n, le_s, le_acc, le_req)
                before = served(log)
                ck_s, ck_lp, ck_ll = run_calibkit(texts, client, "exact")
                ck_req = served(log) - before
                ckr = report("calibkit exact (echo)", n, ck_s, float((ck_lp.argmax(1) == y).mean()), ck_req)
                before = served(log)
                tk_s, tk_lp, _ = run_calibkit(texts, client, "topk")
                report("calibkit top-20", n, tk_s, float((tk_lp.argmax(1) == y).mean()), served(log) - before)

    agree = int((le_ll.argmax(1) == ck_ll.argmax(1)).sum())
    print(f"\nlm-eval and calibkit exact predict the same label for {agree} of {n} examples; "
          f"largest |log-likelihood difference| {np.nanmax(np.abs(le_ll - ck_ll)):.2e}")

    embedded = ck.LocalModel(cache=False)
    embedded.token_ids(" warm-up")  # loads the model outside the timed part
    em_s, em_lp, _ = run_calibkit(texts, embedded, "exact")
    print()
    report("calibkit exact, embedded model", n, em_s, float((em_lp.argmax(1) == y).mean()))

    ratio = ckr / le
    per_request = (ck_s / ck_req) / (le_s / le_req)
    print(f"\ncalibkit exact / lm-eval over the same server: {ratio:.2f}x; seconds per echo request, "
          f"calibkit / lm-eval: {per_request:.2f}\n")
    print(row(ROW_WHAT, f"{ratio:.2f}x ({ckr:.3f} vs {le:.3f} examples/s; {ck_req} vs {le_req} echo requests, "
                        f"{per_request:.2f}x the time per request)", ROW_GOAL, None))


if __name__ == "__main__":
    main()
