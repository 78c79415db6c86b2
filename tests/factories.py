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
