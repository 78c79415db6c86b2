"""Semantic neighbours by string rules, on a tokenizer built here with known pieces."""

import torch

from precompute.science.semantic import neighbour_table, semantic_neighbours

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


class FakeTok:
    """A tiny word-level tokenizer: whole vocabulary entries, else greedy longest-prefix pieces."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.index = {s: i for i, s in enumerate(vocab)}
        self.bos_token_id = self.eos_token_id = self.pad_token_id = 0

    def __len__(self):
        return len(self.vocab)

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)

    def __call__(self, text, add_special_tokens=False):
        ids, rest = [], text
        while rest:
            for n in range(len(rest), 0, -1):
                if rest[:n] in self.index and self.index[rest[:n]] != 0:
                    ids.append(self.index[rest[:n]])
                    rest = rest[n:]
                    break
            else:
                return {"input_ids": ids + [1] * len(rest)}
        return {"input_ids": ids}


VOCAB = [
    "<|endoftext|>",
    "?",
    " token",
    "token",
    " Token",
    " tokens",
    "TOKEN",
    " Berkeley",
    "Ber",
    "keley",
    " city",
    " cities",
    "City",
    ".",
    " the",
]


def test_equivalents_superstrings_substrings():
    tok = FakeTok(VOCAB)
    # make " Berkeley" a single token whose core splits into pieces when typed without the space
    nb = semantic_neighbours(tok)
    name = {s: i for i, s in enumerate(VOCAB)}

    def ids(row):
        return {VOCAB[i] for i in row.tolist() if i >= 0}

    assert ids(nb["equivalents"][name[" token"]]) == {" token", "token", " Token", " tokens", "TOKEN"}
    assert nb["equivalents"][name[" token"], 0] == name[" token"]  # itself first
    assert ids(nb["equivalents"][name[" city"]]) == {" city", " cities", "City"}
    assert ids(nb["equivalents"][name[" cities"]]) == {" cities", " city", "City"}
    assert ids(nb["substrings"][name[" Berkeley"]]) == {"Ber", "keley"}
    assert ids(nb["superstrings"][name["keley"]]) == {" Berkeley"}
    assert ids(nb["equivalents"][name["."]]) == {"."}  # punctuation has no variants


def test_neighbour_table_order_and_padding():
    tok = FakeTok(VOCAB)
    table = neighbour_table(semantic_neighbours(tok), 3)
    name = {s: i for i, s in enumerate(VOCAB)}
    assert table.shape == (len(VOCAB), 3) and table.dtype == torch.long
    assert table[name[" token"], 0] == name[" token"]
    assert table[name["."]].tolist() == [name["."], -1, -1]
    row = table[name[" Berkeley"]].tolist()
    assert row[0] == name[" Berkeley"] and set(row[1:]) == {name["Ber"], name["keley"]}
