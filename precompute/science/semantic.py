"""Semantic neighbours of a token, by deterministic string rules (paper §3.3; upstream-app.md §2.8).

For a token whose text is a word ("core", after stripping one leading space), the rules generate:

* **equivalents**: the core with and without a leading space, in lower-case, capitalised and upper-case forms, and
  plural/singular forms (+s, +es, y -> ies and back);
* **substrings**: when a form of the core tokenises into several tokens that are each at least 3 characters long,
  those pieces (" Berkeley" -> "Ber", "keley");
* **superstrings**: the inverse of substrings (tokens that have this token as a piece).

Only candidates that are a single token count. The token itself is always neighbour 0. Results are arrays of token
ids (-1 padded), never pickles; ``neighbour_table`` flattens them for CSPA with k_s > 1.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

MIN_PIECE_CHARS = 3


def _vocab_strings(tokenizer) -> list[str]:
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def _plural_forms(word: str) -> list[str]:
    lw = word.lower()
    out = []
    if lw.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + ("Y" if word.isupper() else "y"))
    if lw.endswith("es") and len(word) > 3:
        out.append(word[:-2])
    if lw.endswith("s") and len(word) > 2:
        out.append(word[:-1])
    if lw.endswith("y") and len(word) > 2:
        out.append(word[:-1] + ("IES" if word.isupper() else "ies"))
    out.append(word + ("S" if word.isupper() else "s"))
    out.append(word + ("ES" if word.isupper() else "es"))
    return out


def _case_forms(word: str) -> list[str]:
    return list(dict.fromkeys([word, word.lower(), word.capitalize(), word.upper()]))


def semantic_neighbours(tokenizer) -> dict[str, Int[Tensor, "d_vocab n"]]:
    """Equivalents, superstrings and substrings for every token, as -1 padded id arrays ``[d_vocab, n]``."""
    strings = _vocab_strings(tokenizer)
    index: dict[str, int] = {}
    for i, s in enumerate(strings):
        index.setdefault(s, i)
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    n = len(strings)
    equivalents: list[list[int]] = [[i] for i in range(n)]
    substrings: list[list[int]] = [[] for _ in range(n)]
    superstrings: list[list[int]] = [[] for _ in range(n)]
    for i, s in enumerate(strings):
        if i in special:
            continue
        core = s[1:] if s.startswith(" ") else s
        if len(core) < 2 or not core.isalpha():
            continue
        forms = []
        for base in [core] + _plural_forms(core):
            forms.extend(_case_forms(base))
        forms = list(dict.fromkeys(forms))
        eq = equivalents[i]
        for f in forms:
            for text in (f, " " + f):
                j = index.get(text)
                if j is not None and j not in eq and j not in special:
                    eq.append(j)
        for text in (core, " " + core):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) < 2:
                continue
            pieces = [strings[j] for j in ids]
            if all(len(p.strip()) >= MIN_PIECE_CHARS for p in pieces):
                for j in ids:
                    if j != i and j not in substrings[i]:
                        substrings[i].append(j)
    for i, subs in enumerate(substrings):
        subs.sort(key=lambda j: -len(strings[j].strip()))
        for j in subs:
            if i not in superstrings[j]:
                superstrings[j].append(i)
    return {"equivalents": _pad(equivalents), "superstrings": _pad(superstrings), "substrings": _pad(substrings)}


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
