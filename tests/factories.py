"""Shared factories of the tests: tiny random Hugging Face model folders of each family (``make_model_folder``)."""

from __future__ import annotations

import torch

TOL = 1e-4


def _configs(vocab: int):
    from transformers import Gemma3TextConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig

    return {
        # Gemma 3's shape in small: norms before and after attention and MLP, QK-norm, one key/value head,
        # sliding-window layers with a global one, different rotary bases
        "gemma3": Gemma3TextConfig(
            vocab_size=vocab,
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            intermediate_size=96,
            max_position_embeddings=64,
            sliding_window=8,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            query_pre_attn_scalar=16,
        ),
        "gpt2": GPT2Config(vocab_size=vocab, n_embd=64, n_layer=3, n_head=4, n_positions=64, n_inner=128),
        "neox": GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
            rotary_pct=0.25,
        ),
        "llama": LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=96,
            max_position_embeddings=64,
        ),
        "opt": OPTConfig(
            vocab_size=vocab,
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            ffn_dim=128,
            max_position_embeddings=64,
            word_embed_proj_dim=64,
        ),
    }


def make_model_folder(kind: str, folder, seed: int = 0):
    """A tiny random Hugging Face causal LM of architecture ``kind`` with the toy tokenizer, saved in ``folder``."""
    from transformers import AutoModelForCausalLM

    from precompute.models.tokenizers import load_local_tokenizer

    tok = load_local_tokenizer("toy")
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(_configs(len(tok))[kind]).eval()
    with torch.no_grad():  # larger than HF's init so heads do something measurable
        for name, p in hf.named_parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
            elif kind == "gemma3" and "norm" in name:  # norm gains that differ per dimension (Gemma: 1 + weight)
                p.normal_(0, 0.3)
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m precompute ARGS`` in this process: (exit code, stdout, stderr). An argument error is argparse's
    exit 2; a refused value the CLI's exit 2 with one "error: …" line; an unexpected exception fails the test."""
    from precompute.jobs.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    got = capsys.readouterr()
    return code, got.out, got.err


def tiny_gguf_config(kind: str, **overrides):
    """A tiny config of ``kind`` ("llama": grouped-query attention; "gemma3": one key/value head, a sliding and a
    global layer) for GGUF files written here."""
    from transformers import Gemma3TextConfig, LlamaConfig

    shared = dict(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)
    shared["max_position_embeddings"] = 64
    if kind == "gemma3":
        spec = dict(
            num_key_value_heads=1,
            head_dim=16,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
            query_pre_attn_scalar=16,
            architectures=["Gemma3ForCausalLM"],
        )
        return Gemma3TextConfig(**{**shared, **spec, **overrides})
    return LlamaConfig(**{**shared, "num_key_value_heads": 2, "architectures": ["LlamaForCausalLM"], **overrides})


def make_gguf(path, config, seed: int = 0):
    """A random model of ``config`` (Llama or Gemma 3) written as llama.cpp writes one (the ``gguf`` package): its
    matrices quantised to Q8_0, norms in float32; Llama's q and k permuted and Gemma's norm weights stored as
    1 + w, as llama.cpp's converter does. Returns (path, the model)."""
    import gguf
    import numpy as np
    import transformers
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map

    torch.manual_seed(seed)
    hf = getattr(transformers, config.architectures[0])(config).eval()
    gemma = config.model_type == "gemma3_text"
    if gemma:
        with torch.no_grad():  # norm gains that differ per dimension
            for name, p in hf.named_parameters():
                if "norm" in name:
                    p.normal_(0, 0.3)
    names = {v: k for k, v in get_gguf_hf_weights_map(hf, TensorProcessor()).items()}

    def permute(w, n_head):  # llama.cpp's convert_hf_to_gguf.py
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    writer = gguf.GGUFWriter(str(path), "gemma3" if gemma else "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    for hf_name, t in hf.state_dict().items():
        if hf_name not in names:  # a tied unembedding
            continue
        a = t.numpy().astype(np.float32)
        if gemma and "norm.weight" in hf_name:
            a = a + 1
        elif ".q_proj." in hf_name and not gemma:
            a = permute(a, config.num_attention_heads)
        elif ".k_proj." in hf_name and not gemma:
            a = permute(a, config.num_key_value_heads)
        if a.ndim == 2:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(names[hf_name], q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(names[hf_name], a)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, hf
