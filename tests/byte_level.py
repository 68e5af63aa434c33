"""A small byte-level BPE model made at test time, nothing downloaded: the tokenizer family of
Llama 3, GPT-2 and Qwen (spaces as "Ġ", a character outside the vocabulary split into
raw-byte tokens), trained by the ``tokenizers`` library on lines of ../shared/data, with a
random-weight LlamaForCausalLM of a fixed seed, saved as transformers saves a checkpoint;
the same weights and vocabulary written as a GGUF for llama.cpp (:func:`write_gguf`); and the
plain forward pass the tests compare every backend with (:class:`Reference`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from helpers import SHARED_DATA

VOCAB_SIZE = 2000
BOS, EOS = "<s>", "</s>"


def training_lines() -> list[str]:
    """Sentences of the three shared data sets (English, with the odd accented name)."""
    lines = [line[2:] for line in (SHARED_DATA / "sst2" / "train.txt").read_text().splitlines()[:4000]]
    lines += (SHARED_DATA / "agnews" / "test.csv").read_text().splitlines()[:2000]
    for row in (SHARED_DATA / "rte" / "train.jsonl").read_text().splitlines()[:1000]:
        d = json.loads(row)
        lines += [d["premise"], d["hypothesis"]]
    return lines


def build(folder: Path, seed: int = 0) -> Path:
    """Train the tokenizer, make the model, save both in ``folder``; returns ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_lines(), trainer)
    # A BOS before every text, as Llama 3's tokenizer adds one.
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS)
    folder.mkdir(parents=True, exist_ok=True)
    hf_tok.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_theta=10000.0, bos_token_id=tok.token_to_id(BOS), eos_token_id=tok.token_to_id(EOS),
        tie_word_embeddings=False,
        # wider than the default 0.02, so that next-token distributions are far from uniform
        initializer_range=0.3,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's rotary embedding pairs neighbouring dimensions, transformers' the two
    # halves: convert_hf_to_gguf.py reorders the rows of q and k so (LlamaModel.permute).
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(folder: Path, path: Path) -> Path:
    """The checkpoint in ``folder`` as a float32 GGUF with its byte-level BPE vocabulary, as
    llama.cpp's convert_hf_to_gguf.py writes a Llama with a GPT-2 style tokenizer."""
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "config.json").read_text())
    tj = json.loads((folder / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    special = {a["id"] for a in tj["added_tokens"] if a["special"]}
    w = gguf.GGUFWriter(str(path), "llama")
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(cfg["hidden_size"] // n_head)
    w.add_rope_freq_base(float(cfg.get("rope_theta") or (cfg.get("rope_parameters") or {})["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_add_bos_token(True)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    for name, t in sorted(load_file(str(folder / "model.safetensors")).items()):
        t = t.astype(np.float32)
        if name.startswith("model.layers."):
            i, rest = name[len("model.layers."):].split(".", 1)
            part = rest.rsplit(".", 1)[0]
            if part == "self_attn.q_proj":
                t = _permute(t, n_head)
            elif part == "self_attn.k_proj":
                t = _permute(t, n_kv)
            out = f"blk.{i}.{per_layer[part]}.weight"
        else:
            out = names[name]
        w.add_tensor(out, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class Reference:
    """The plain forward pass: the checkpoint under transformers, float32, one text at a time."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])  # with the BOS

    def logprobs(self, ids: list[int]) -> np.ndarray:
        """float64 log-softmax of every position's next-token logits."""
        torch = self.torch
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
        return torch.log_softmax(logits.to(torch.float64), dim=-1).numpy()

    def continuation(self, prompt: str, form: str) -> tuple[list[int], float] | None:
        """The form's token ids and log P(form | prompt); None where prompt + form does not
        tokenize as the prompt's own tokens followed by more (the form merges into the prompt)."""
        pid, full = self.ids(prompt), self.ids(prompt + form)
        if len(full) <= len(pid) or full[:len(pid)] != pid:
            return None
        lp = self.logprobs(full)
        return full[len(pid):], form_logprob(lp, len(pid), full)

    def next_token(self, prompt: str) -> np.ndarray:
        return self.logprobs(self.ids(prompt))[-1]

    def token_bytes(self, ids: list[int]) -> list[bytes]:
        """Each token's bytes, read through the ``tokenizers`` library's own table (:func:`byte_of_char`)."""
        table = byte_of_char()
        return [bytes(table[c] for c in t) for t in self.tokenizer.convert_ids_to_tokens(ids)]


def form_logprob(lp: np.ndarray, n_prompt: int, full: list[int]) -> float:
    """log P(the tokens of ``full`` after its first ``n_prompt``), from every position's log-softmax ``lp``."""
    return float(sum(lp[i - 1, full[i]] for i in range(n_prompt, len(full))))


@functools.lru_cache(maxsize=1)
def byte_of_char() -> dict[str, int]:
    """The character that stands for each byte in a byte-level token, as the ``tokenizers`` library's
    ByteLevel pre-tokenizer writes it (read from it, not from calibkit's table): every byte that
    UTF-8 text can hold, from characters of one to four bytes."""
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    out: dict[str, int] = {}
    chars = [*range(0xC0),  # ASCII, and (from 0x80) two-byte characters ending in each continuation byte
             *((lead - 0xC0) << 6 for lead in range(0xC2, 0xE0)),  # lead bytes of two-byte characters
             0x800, *((lead - 0xE0) << 12 for lead in range(0xE1, 0xF0)),  # of three-byte ones
             0x10000, *((lead - 0xF0) << 18 for lead in range(0xF1, 0xF5))]  # of four-byte ones
    for c in chars:
        ch = chr(c)
        (mapped, _), = pre.pre_tokenize_str(ch)
        out.update(zip(mapped, ch.encode("utf-8")))
    return out
