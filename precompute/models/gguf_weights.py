"""A GGUF file's weights, dequantised to float32 into a plain Hugging Face model of its config (``gguf`` converts
the config and tokenizer and records the file; this module reads the weights)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelUnavailableError
from .gguf import _need_gguf, _short, model_class, tensor_at_a_time


def transformers_model(path: Path):
    """transformers' own model of the GGUF file, dequantised to float32 (still marked as a GGUF-quantised model)."""
    import torch
    from transformers import AutoModelForCausalLM

    _need_gguf()
    try:
        return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways inside transformers and gguf
        raise ModelUnavailableError(f"transformers cannot dequantise the GGUF file {path}: {_short(err)}") from None


ROWS_AT_A_TIME = 16384  # rows of a large tensor dequantised at once (Gemma 3's embedding: 16 chunks of 42 MB)


def dequantised(path: Path, config):
    """The file's weights dequantised to float32 in a plain model of the folder's config (no quantisation record
    left, so nothing downstream treats it as a quantised model).

    Read a tensor at a time, with transformers' own name map and tensor processor for the architecture, straight
    into the model's (untouched, so not yet resident) parameters, a large tensor in blocks of rows; the reader's
    metadata (the tokenizer's arrays: 670 MB for Gemma 3) is let go first. Peak: the model's size and one block
    (Gemma 3: +1.1 GB; transformers' whole-model load: +2.5 GB). Equal to :func:`transformers_model`'s weights
    bit for bit (tests/test_real_model.py)."""
    import numpy as np
    import torch

    _need_gguf()
    import gguf
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    from .memory import release
    from .weight_cache import skeleton_of

    try:
        reader = gguf.GGUFReader(str(path))
        arch = str(reader.fields["general.architecture"].contents())
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways inside gguf
        raise ModelUnavailableError(f"the GGUF file {path} cannot be read: {_short(err)}") from None
    processor_class = TENSOR_PROCESSORS.get(arch, TensorProcessor)
    if not tensor_at_a_time(arch):
        del reader
        return _dequantised_whole(path, config)
    tensors = list(reader.tensors)
    reader.fields.clear()  # the metadata's many small arrays; the tensors keep only the memory-mapped file
    del reader
    release()
    plain = skeleton_of(config, model_class(config))
    processor = processor_class(config=config.to_dict())
    names = get_gguf_hf_weights_map(plain, processor)
    params = dict(plain.named_parameters(remove_duplicate=False))
    filled: set[str] = set()
    with torch.no_grad():
        for tensor in tensors:
            name = names.get(tensor.name)  # these processors keep a tensor's name
            if name is None or name not in params:
                continue
            target, data = params[name], tensor.data
            step = _rows_at_a_time(processor, tensor, target)
            for start in range(0, data.shape[0], step):
                block = gguf.dequantize(data[start : start + step], tensor.tensor_type)
                rows = target[start : start + step] if step < data.shape[0] else target
                processed = processor.process(weights=block, name=tensor.name).weights
                if processed.size != rows.numel():
                    raise ModelUnavailableError(
                        f"the GGUF file {path} does not fit its own config: its tensor {tensor.name} has "
                        f"{int(tensor.n_elements)} values, the model's {name} {tuple(target.shape)}"
                    )
                rows.copy_(torch.from_numpy(np.require(processed, requirements=("C", "W"))).reshape(rows.shape))
                del block, processed
            filled.add(name)
    missing = [k for k in params if k not in filled and "lm_head" not in k]  # a tied unembedding is absent
    if missing:
        raise ModelUnavailableError(f"the GGUF file {path} does not fit its own config: missing {missing[:3]}")
    plain.tie_weights()
    release()
    return plain.eval()


def _rows_at_a_time(processor, tensor, target) -> int:
    """How many of ``tensor``'s rows to dequantise at once: a block where the file's rows are the parameter's and
    the processor leaves a block as it is (checked on the first row), else the whole tensor."""
    import gguf

    data = tensor.data
    if data.ndim != 2 or data.shape[0] != target.shape[0] or data.shape[0] <= ROWS_AT_A_TIME:
        return int(data.shape[0])
    first = gguf.dequantize(data[:1], tensor.tensor_type)
    return ROWS_AT_A_TIME if processor.process(weights=first, name=tensor.name).weights is first else int(data.shape[0])


def _dequantised_whole(path: Path, config):
    """:func:`dequantised` through transformers' whole-model load (architectures whose tensor processor needs
    more than a tensor's name)."""
    from .weight_cache import skeleton_of

    quantised = transformers_model(path)
    plain = skeleton_of(config, model_class(config))
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:  # a tied unembedding may be absent
        raise ModelUnavailableError(
            f"the GGUF file {path} does not fit its own config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    plain.tie_weights()
    del quantised
    return plain.eval()
