"""The Prompt pairs page's prompt sets, by label and by the short name a link gives them, and the parser of the
"your own pairs" box: which pairs each set builds for a tokenizer (``data.prompts``)."""

from __future__ import annotations

from ..errors import InvalidInputError
from .prompts import PRESETS, ioi_pairs, preset_pairs, repeat_pairs

IOI, REPEAT, OWN = "IOI (generated)", "repeated tokens (synthetic text)", "your own pairs"
GENERATED = (IOI, REPEAT)  # sets built for any tokenizer, of a chosen size
SETS = (IOI, REPEAT, *(f"preset: {name}" for name in PRESETS), OWN)
BUILT = tuple(s for s in SETS if s != OWN)  # the sets that need no text from the user
OWN_HELP = (
    "One pair per line: clean prompt | corrupted prompt | right answer | wrong answer. Answers get a "
    "leading space (start one with _ for none). Every prompt must have the same number of tokens."
)
# the prompt sets by the short name a link gives them (?prompts=repeat; ?set= names the artifact set)
SET_NAMES = dict(zip(["ioi", "repeat", *PRESETS, "own"], SETS))
SHORT_SET = {label: short for short, label in SET_NAMES.items()}


def _answer(text: str) -> str:
    text = text.strip()
    return text[1:] if text.startswith("_") else " " + text


def own_pairs(text: str):
    """(clean prompts, corrupted prompts, (right, wrong) answers) from the "your own pairs" box."""
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        raise InvalidInputError("type at least one pair")
    parts = [line.split("|") for line in rows]
    bad = [i + 1 for i, p in enumerate(parts) if len(p) != 4]
    if bad:
        raise InvalidInputError(f"line {bad[0]} does not have four fields separated by |")
    return (
        [p[0].strip() for p in parts],
        [p[1].strip() for p in parts],
        [(_answer(p[2]), _answer(p[3])) for p in parts],
    )


def build_pairs(which: str, tokenizer, n: int, own: str):
    """(clean prompts, corrupted prompts, answers) of the set labelled ``which``: ``n`` pairs where the set is
    generated, ``own`` the box's text for "your own pairs"."""
    if which == IOI:
        clean, corrupted, answers, _ = ioi_pairs(tokenizer, n)
        return clean, corrupted, answers
    if which == REPEAT:
        return repeat_pairs(tokenizer, n)
    if which == OWN:
        return own_pairs(own)
    return preset_pairs(which.split(": ", 1)[1], tokenizer)
