"""Semantic neighbours of a token, by the paper's deterministic string rules (paper §3.3; the
authors' ``cspa/cspa_semantic_similarity.py`` in callummcdougall/SERI-MATS-2023-Streamlit-pages).

For every token the rules generate candidate strings and keep those that are exactly one token of the vocabulary:

* **equivalents**: the token itself; its leading-space variant (every token, punctuation included: '!' <-> ' !');
  then, for a word, its inflections and lemmas (lemminflect: plurals, verb forms, 'prisons' ~ 'prison',
  'Wrap' ~ 'wrapping') and the paper's suffix rules (-ing; verb -> noun -er, -ner, -ion; adjective -r, -ic, -al,
  -ous, -able, -ive; each +- plural; -y -> -ier), each in lower-case, Capitalised and UPPER form, with and without
  the leading space. Ordered as the paper: the token, its space variant, its plural variants, then the rest.
* **substrings**: when the token's core word (without its leading space) tokenises into several pieces of at least
  3 characters each, those pieces, longest first (' Berkeley' -> 'keley', 'Ber').
* **superstrings**: the inverse of substrings ('keley' -> ' Berkeley').

Morphology comes from lemminflect, a maintained library that ships its data and works offline. Results are arrays
of token ids (-1 padded), never pickles; ``neighbour_table`` flattens them for CSPA with k_s > 1.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

MIN_PIECE_CHARS = 3
NOUN_SUFFIXES = ("er", "ner", "ion")
ADJECTIVE_SUFFIXES = ("r", "ic", "al", "ous", "able", "ive")


def _vocab_strings(tokenizer) -> list[str]:
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def _plurals(word: str) -> list[str]:
    from lemminflect import getAllInflections

    forms = [f for tag, fs in getAllInflections(word, upos="NOUN").items() if tag == "NNS" for f in fs]
    return [f for f in dict.fromkeys(forms + [word + "s"]) if f != word]


def word_forms(word: str) -> tuple[list[str], list[str]]:
    """(plural forms, other related forms) of a lower-case word: lemmas, inflections and the suffix rules."""
    from lemminflect import getAllInflections, getAllLemmas

    lemmas = [word] + [lem for forms in getAllLemmas(word).values() for lem in forms]
    related: list[str] = []
    for lemma in dict.fromkeys(lemmas):
        related.append(lemma)
        related += [f for forms in getAllInflections(lemma).values() for f in forms]
    stems = {word, word[:-1] if word.endswith("e") else word}
    for stem in stems:
        related += [stem + "ing", stem + stem[-1] + "ing"]
        for suffix in NOUN_SUFFIXES + ADJECTIVE_SUFFIXES:
            related += [stem + suffix, stem + suffix + "s"]
    if word.endswith("y"):
        related.append(word[:-1] + "ier")
    plurals = _plurals(word)
    return plurals, [f for f in dict.fromkeys(related) if f != word and f not in plurals]


def _space_variant(s: str) -> str:
    return s[1:] if s.startswith(" ") else " " + s


def equivalents(s: str, index: dict[str, int]) -> list[int]:
    """Token ids equivalent to the token with text ``s`` (itself first), by the rules in the module docstring."""
    own = index[s]
    out = [own]
    space = s.startswith(" ")
    core = s[1:] if space else s

    def add(text: str) -> None:
        j = index.get(text)
        if j is not None and j not in out:
            out.append(j)

    add(_space_variant(s))
    if len(core) < 2 or not core.isalpha():
        return out
    plurals, related = word_forms(core.lower())
    prefix = " " if space else ""
    for p in plurals:  # the token's plural variants, same spacing and case style first
        add(prefix + (p.upper() if core.isupper() and len(core) > 1 else p.capitalize() if core[0].isupper() else p))
    words = [core.lower()] + plurals + related
    for style in (str.lower, str.capitalize, str.upper):
        for pre in ("", " "):
            for word in words:
                add(pre + style(word))
    return out


def substrings(s: str, tokenizer, strings: list[str], own: int) -> list[int]:
    """Pieces of the token's core word when it tokenises into several pieces of >= 3 characters, longest first."""
    core = s[1:] if s.startswith(" ") else s
    out: list[int] = []
    for text in (core, " " + core):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < 2 or not all(len(strings[j].strip()) >= MIN_PIECE_CHARS for j in ids):
            continue
        out += [j for j in ids if j != own and j not in out]
    return sorted(out, key=lambda j: -len(strings[j].strip()))


def semantic_neighbours(tokenizer) -> dict[str, Int[Tensor, "d_vocab n"]]:
    """Equivalents, superstrings and substrings for every token, as -1 padded id arrays ``[d_vocab, n]``."""
    strings = _vocab_strings(tokenizer)
    index: dict[str, int] = {}
    for i, s in enumerate(strings):
        index.setdefault(s, i)
    special = {t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
    special |= set(getattr(tokenizer, "all_special_ids", []))
    for t in special:  # special tokens are nobody's neighbour
        index.pop(strings[t], None)
    n = len(strings)
    eq: list[list[int]] = [[i] for i in range(n)]
    subs: list[list[int]] = [[] for _ in range(n)]
    for i, s in enumerate(strings):
        if i in special or index.get(s) != i or not s.strip():
            continue
        eq[i] = equivalents(s, index)
        if len(s.strip()) >= 2 * MIN_PIECE_CHARS and s.strip().isalpha():
            subs[i] = substrings(s, tokenizer, strings, i)
    for i in range(n):  # duplicate strings share the first id's neighbours
        j = index.get(strings[i])
        if j is not None and j != i:
            eq[i] = [i] + [x for x in eq[j] if x != i]
            subs[i] = list(subs[j])
    sup: list[list[int]] = [[] for _ in range(n)]
    for i, pieces in enumerate(subs):
        for j in pieces:
            if i not in sup[j]:
                sup[j].append(i)
    return {"equivalents": _pad(eq), "superstrings": _pad(sup), "substrings": _pad(subs)}


def _pad(lists: list[list[int]]) -> Tensor:
    width = max(1, max(len(x) for x in lists))
    out = torch.full((len(lists), width), -1, dtype=torch.int32)
    for i, x in enumerate(lists):
        if x:
            out[i, : len(x)] = torch.tensor(x, dtype=torch.int32)
    return out


def neighbour_table(neighbours: dict[str, Tensor], k_s: int) -> Int[Tensor, "d_vocab k_s"]:
    """Per token: itself, then equivalents, superstrings, substrings, deduplicated and cut to ``k_s`` (-1 padded)."""
    eq, sup, sub = neighbours["equivalents"], neighbours["superstrings"], neighbours["substrings"]
    n = eq.shape[0]
    out = torch.full((n, k_s), -1, dtype=torch.long)
    cat = torch.cat([eq, sup, sub], dim=1).tolist()
    for i in range(n):
        row = [i]
        for j in cat[i]:
            if j >= 0 and j not in row:
                row.append(j)
            if len(row) == k_s:
                break
        out[i, : len(row)] = torch.tensor(row)
    return out
