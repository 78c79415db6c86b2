"""Which sequences a run analyses: the paper's rule (the authors' ``process_webtext``,
callummcdougall/SERI-MATS-2023-Streamlit-pages).

The documents, already shuffled with the seed (``sources.shuffled``), are taken in order; curly quotes are
normalised to straight ones; a document is kept when its tokenisation with BOS prepended is *longer* than
``seq_len`` tokens, and cut to ``seq_len`` (BOS included), until ``n`` are found.
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .tokenization import encode

QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
RULE = (
    "documents shuffled with np.random.seed(seed); curly quotes normalised; the first n_seqs whose "
    "tokenisation with BOS is longer than seq_len; each cut to seq_len (BOS included)"
)


def normalise_quotes(text: str) -> str:
    return text.translate(QUOTES)


def select_sequences(docs: list[str], tokenizer, n: int, length: int) -> list[list[int]]:
    """The first ``length`` tokens (BOS first) of the first ``n`` documents, in order, longer than ``length``."""
    out = []
    for doc in docs:
        ids = encode(tokenizer, normalise_quotes(doc))
        if len(ids) > length:
            out.append(ids[:length])
            if len(out) == n:
                return out
    raise InvalidInputError(
        f"only {len(out)} documents have more than {length} tokens; asked for {n}. Use a "
        "shorter --seq-len, fewer --n-seqs, or a larger dataset"
    )


def load_sequences(
    dataset: str, split: str, seed: int, tokenizer, n: int, length: int, n_ctx: int | None = None
) -> list[list[int]]:
    """The sequences a run or a survey analyses, the one way both get them: the dataset's documents
    (``sources.load_documents``), shuffled by ``seed``, then the paper's selection (``select_sequences``)."""
    from .sources import load_documents, shuffled

    if n_ctx is not None and length > n_ctx:
        raise InvalidInputError(f"--seq-len {length} is above the model's context n_ctx = {n_ctx}")
    return select_sequences(shuffled(load_documents(dataset, split), seed), tokenizer, n, length)
