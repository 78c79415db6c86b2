"""Prompt sets the project generates itself: indirect-object identification (IOI) and the seeds' other tasks.

IOI: "When Mary and John went to the store, John gave a drink to" → " Mary" (the indirect object, IO) rather than
" John" (the subject, S). Prompts come from a few templates, balanced between the ABBA and BABA orders, with names
drawn from ``NAMES`` that are one token (with their leading space) in the given tokenizer; a tokenizer without
enough such names gets an explained error (the survey records NaN with that reason). Every prompt of a template
has the same length, so a template is one batch.

The corrupted prompt of a pair keeps the sentence and swaps the subject of the second clause (S ↔ IO there), so
the right answer flips: the standard denoising set-up for activation patching.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import InvalidInputError

NAMES = (
    "Mary",
    "John",
    "Alice",
    "Bob",
    "Tom",
    "James",
    "Anna",
    "Paul",
    "Mark",
    "Sarah",
    "David",
    "Laura",
    "Mike",
    "Emma",
    "Jack",
    "Kate",
    "Peter",
    "Lisa",
    "George",
    "Jane",
    "Daniel",
    "Amy",
    "Chris",
    "Rachel",
    "Steve",
    "Karen",
    "Brian",
    "Helen",
    "Eric",
    "Linda",
    "Adam",
    "Susan",
    "Frank",
    "Grace",
    "Henry",
    "Ruth",
    "Sam",
    "Joe",
    "Ben",
    "Luke",
)
PLACES = ("store", "park", "office", "school", "station", "market")
OBJECTS = ("drink", "book", "ball", "key", "letter", "gift")
IOI_TEMPLATES = (
    "When {A} and {B} went to the {place}, {B} gave a {object} to",
    "After {A} and {B} went to the {place}, {B} handed a {object} to",
    "Then, {A} and {B} had a long day at the {place}. {B} gave a {object} to",
    "While {A} and {B} were working at the {place}, {B} passed a {object} to",
)
MIN_NAMES = 4

# other tasks of the seed notebooks: (clean prompt, corrupted prompt, right answer, wrong answer)
PRESETS = {
    "pronouns": [
        ("John is such a great friend, isn't", "Mary is such a great friend, isn't", " he", " she"),
        ("Mary is such a good neighbour, isn't", "John is such a good neighbour, isn't", " she", " he"),
        ("Tom is such a kind teacher, isn't", "Anna is such a kind teacher, isn't", " he", " she"),
        ("Anna is such a smart student, isn't", "Tom is such a smart student, isn't", " she", " he"),
    ],
    "antonyms": [
        ("John is tall. Mary is", "John is short. Mary is", " short", " tall"),
        ("Tom is old. Anna is", "Tom is young. Anna is", " young", " old"),
        ("Bob is fast. Sue is", "Bob is slow. Sue is", " slow", " fast"),
        ("Kate is rich. Paul is", "Kate is poor. Paul is", " poor", " rich"),
    ],
    "sizes": [
        ("An elephant is bigger than a", "A mouse is bigger than an", " mouse", " elephant"),
        ("A whale is larger than a", "A fish is larger than a", " fish", " whale"),
        ("A mountain is taller than a", "A hill is taller than a", " hill", " mountain"),
        ("A car is faster than a", "A bike is faster than a", " bike", " car"),
    ],
}


@dataclass
class IOIGroup:
    """IOI prompts of one template (equal lengths). Positions count the BOS token at 0."""

    template: str
    clean: list[list[int]]  # [n, S] token ids, BOS first
    corrupted: list[list[int]]  # the same with the second clause's subject swapped
    io_ids: list[int]  # the indirect object's token (the clean answer)
    s_ids: list[int]  # the subject's token (the wrong answer)
    io_pos: list[int]  # position of the IO name's first occurrence
    s_pos: list[int]  # position of the subject's first occurrence
    texts: list[str]


def single_token_names(tokenizer) -> list[tuple[str, int]]:
    """(name, token id) for every name of NAMES that is one token with its leading space."""
    out = []
    for name in NAMES:
        ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            out.append((name, int(ids[0])))
    return out


def _encode(tokenizer, text: str) -> list[int]:
    from .tokenization import encode

    return encode(tokenizer, text)


def ioi_groups(tokenizer, n: int, seed: int = 0) -> list[IOIGroup]:
    """``n`` IOI prompt pairs (ABBA and BABA alternating, templates in turn), grouped by template."""
    names = single_token_names(tokenizer)
    if len(names) < MIN_NAMES:
        raise InvalidInputError(
            f"this tokenizer has {len(names)} single-token English first names (of {len(NAMES)} "
            f"tried); IOI prompts need at least {MIN_NAMES}"
        )
    if n < 1:
        raise InvalidInputError(f"need at least one IOI prompt, got n = {n}")
    rng = random.Random(seed)
    groups: dict[str, IOIGroup] = {}
    for i in range(n):
        template = IOI_TEMPLATES[i % len(IOI_TEMPLATES)]
        (io, io_id), (s, s_id) = rng.sample(names, 2)
        place, obj = PLACES[(i // len(IOI_TEMPLATES)) % len(PLACES)], OBJECTS[i % len(OBJECTS)]
        first, second = (io, s) if (i // len(IOI_TEMPLATES)) % 2 == 0 else (s, io)  # ABBA, then BABA
        clause = template.split("{B}", 2)  # the first {B} is the second name listed, the second the subject
        clean_text = (
            clause[0].format(A=first) + second + clause[1].format(place=place) + s + clause[2].format(object=obj)
        )
        corrupt_text = (
            clause[0].format(A=first) + second + clause[1].format(place=place) + io + clause[2].format(object=obj)
        )
        clean, corrupted = _encode(tokenizer, clean_text), _encode(tokenizer, corrupt_text)
        key = f"{template}|{len(clean)}"
        g = groups.setdefault(key, IOIGroup(template, [], [], [], [], [], [], []))
        if len(corrupted) != len(clean):
            continue
        g.clean.append(clean)
        g.corrupted.append(corrupted)
        g.io_ids.append(io_id)
        g.s_ids.append(s_id)
        g.io_pos.append(clean.index(io_id))
        g.s_pos.append(clean.index(s_id))
        g.texts.append(clean_text)
    return [g for g in groups.values() if g.clean]


def ioi_pairs(tokenizer, n: int = 8, seed: int = 0):
    """``n`` IOI pairs of one template (equal lengths), half ABBA and half BABA where n allows:
    (clean [n, S], corrupted [n, S], answers [n, 2] = (IO, S), clean texts)."""
    import torch

    for g in ioi_groups(tokenizer, n * len(IOI_TEMPLATES) * 2, seed):
        if len(g.clean) >= n:
            answers = [[io, s] for io, s in zip(g.io_ids[:n], g.s_ids[:n])]
            return (torch.tensor(g.clean[:n]), torch.tensor(g.corrupted[:n]), torch.tensor(answers), g.texts[:n])
    raise InvalidInputError(f"could not make {n} IOI prompts of one length with this tokenizer")


def preset_pairs(name: str, tokenizer=None) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(clean prompts, corrupted prompts, (right, wrong) answers) of a preset task of the seed notebooks. With a
    ``tokenizer``, the set is built for it: only the rows whose answers are one token each and whose prompts have
    the length most of the rows share (a logit difference compares equal-length prompts), at least two."""
    if name not in PRESETS:
        raise InvalidInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    rows = PRESETS[name]
    if tokenizer is not None:
        by_length: dict[int, list] = {}
        for row in rows:
            n = len(_encode(tokenizer, row[0]))
            if n == len(_encode(tokenizer, row[1])) and all(
                len(tokenizer(a, add_special_tokens=False)["input_ids"]) == 1 for a in row[2:]
            ):
                by_length.setdefault(n, []).append(row)
        best = max(by_length.values(), key=len, default=[])
        if len(best) < 2:
            raise InvalidInputError(
                f"the preset {name!r} cannot be built with this tokenizer: fewer than two of its "
                "pairs have one-token answers and prompts of one length"
            )
        rows = best
    return [r[0] for r in rows], [r[1] for r in rows], [(r[2], r[3]) for r in rows]


def repeat_pairs(tokenizer, n: int = 8, length: int = 16, seed: int = 0):
    """``n`` prompts of the project's synthetic text, ``length`` tokens (BOS included), whose next token is a
    content word that already appeared in the prompt: copy suppression's case. The corrupted prompt replaces the
    earlier occurrences with another content word of the text, which is the wrong answer.
    (clean [n, length], corrupted [n, length], answers [n, 2])."""
    import torch

    from .function_words import function_word_ids
    from .synthetic import corpus

    skip = set(function_word_ids(tokenizer)) | set(getattr(tokenizer, "all_special_ids", []) or [])
    clean, corrupted, answers = [], [], []
    for doc in corpus(n_docs=60 * n, seed=seed, min_sentences=6, max_sentences=12):
        ids = _encode(tokenizer, doc)
        for start in range(1, len(ids) - length, length):
            row = [ids[0]] + ids[start : start + length - 1]
            nxt = ids[start + length - 1]
            content = [t for t in row[1:] if t not in skip]
            if nxt in skip or nxt not in row[1:]:
                continue
            others = [t for t in dict.fromkeys(ids) if t not in skip and t not in row and t != nxt]
            if not others or len(content) < 3:
                continue
            wrong = others[0]
            clean.append(row)
            corrupted.append([wrong if t == nxt else t for t in row])
            answers.append([nxt, wrong])
            if len(clean) == n:
                return torch.tensor(clean), torch.tensor(corrupted), torch.tensor(answers)
    raise InvalidInputError(f"found only {len(clean)} repeated-token prompts of {length} tokens in the synthetic text")
