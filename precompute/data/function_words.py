"""Function words and punctuation: the source tokens CSPA never keeps.

Two lists. ``paper`` (the default): the paper's own ``FUNCTION_STR_TOKS`` (150 strings, kept verbatim as data with
its provenance in ``paper_function_tokens.json``), mapped to the tokens of any tokenizer (on GPT-2: 147 ids, BOS
included; strings that are not one token of another tokenizer are reported). ``extended``: the project's longer
list of function words and punctuation (``function_word_ids``, every single-token form with and without a leading
space, lower-case and capitalised), which also shapes the synthetic toy model.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

FUNCTION_WORDS: tuple[str, ...] = tuple(
    """
    a an the this that these those some any each every no all both either neither such what which whose
    i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its itself
    we us our ours ourselves they them their theirs themselves who whom one ones
    of in on at by for with about against between into through during before after above below to from up down
    out off over under again further then once here there when where why how than as so too very just also only
    until while because if or and but nor not yet
    be am is are was were been being have has had having do does did doing will would shall should can could
    may might must
    s t d ll re ve m don doesn didn isn aren wasn weren won wouldn can't couldn shouldn
    said says say get got like more most other own same now even new first last many much well still
    """.split()
)

PUNCTUATION: tuple[str, ...] = (
    ".",
    ",",
    "!",
    "?",
    ";",
    ":",
    "'",
    '"',
    "(",
    ")",
    "[",
    "]",
    "-",
    "--",
    "—",
    "–",
    "/",
    "...",
    "'s",
    "’s",
    " (",
    ' "',
    " '",
    " -",
    " —",
    " –",
    " [",
    "\n",
    "\n\n",
    " \n",
    ".\n",
    ".\n\n",
    ',"',
    '."',
    '?"',
    '!"',
    " ",
    "  ",
    "&",
    " &",
    "*",
    " *",
)


def _single_token_id(tokenizer, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    return ids[0] if len(ids) == 1 else None


def function_word_ids(tokenizer) -> list[int]:
    """Sorted ids of every single-token form of the function words and punctuation, plus BOS/EOS if present."""
    ids: set[int] = set()
    for word in FUNCTION_WORDS:
        for form in {word, word.capitalize(), word.upper()}:
            for text in (form, " " + form):
                tid = _single_token_id(tokenizer, text)
                if tid is not None:
                    ids.add(tid)
    for text in PUNCTUATION:
        tid = _single_token_id(tokenizer, text)
        if tid is not None:
            ids.add(tid)
    for special in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if special is not None:
            ids.add(int(special))
    return sorted(ids)


# --- the exclusion lists CSPA can use
EXCLUSION_LISTS = ("paper", "extended")
PAPER_FILE = Path(__file__).resolve().parent / "paper_function_tokens.json"


@lru_cache(maxsize=1)
def paper_function_strings() -> tuple[str, ...]:
    """The paper's FUNCTION_STR_TOKS (150 strings; provenance in the JSON file)."""
    return tuple(json.loads(PAPER_FILE.read_text(encoding="utf-8"))["strings"])


def paper_function_ids(tokenizer) -> tuple[list[int], list[str]]:
    """(sorted ids of the paper's strings that are one token of ``tokenizer``, plus BOS; the strings that are not).

    On GPT-2's vocabulary every string is one token: 147 distinct ids. Special-token text (``<|endoftext|>``) maps
    to the special token, as in the paper's code."""
    ids: set[int] = set()
    missing: list[str] = []
    for text in dict.fromkeys(paper_function_strings()):
        tid = _single_token_id(tokenizer, text)
        if tid is None:
            missing.append(text)
        else:
            ids.add(tid)
    if tokenizer.bos_token_id is not None:
        ids.add(int(tokenizer.bos_token_id))
    return sorted(ids), missing


def exclusion_ids(tokenizer, which: str = "paper") -> tuple[list[int], list[str]]:
    """CSPA's excluded source tokens: ``paper`` (the paper's list, default) or ``extended`` (the project's own
    longer list of function words and punctuation). Returns (ids, strings of the list that are not one token)."""
    if which == "paper":
        return paper_function_ids(tokenizer)
    if which == "extended":
        return function_word_ids(tokenizer), []
    raise ValueError(f"unknown exclusion list {which!r}; choose one of {EXCLUSION_LISTS}")
