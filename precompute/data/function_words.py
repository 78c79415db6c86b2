"""Function words and punctuation: the source tokens CSPA never keeps and the app filters out of rankings.

The paper excludes about 150 function words and punctuation marks (and BOS) as CSPA sources, because the head
does not copy-suppress them. This list is our own; ``function_word_ids`` maps it to single-token ids of any
tokenizer (with and without a leading space, lower-case and capitalised), so it works for GPT-2's vocabulary and
for the locally built ones alike.
"""

from __future__ import annotations

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
    ".", ",", "!", "?", ";", ":", "'", '"', "(", ")", "[", "]", "-", "--", "—", "–", "/", "...", "'s", "’s",
    " (", " \"", " '", " -", " —", " –", " [", "\n", "\n\n", " \n", ".\n", ".\n\n", ",\"", ".\"", "?\"", "!\"",
    " ", "  ", "&", " &", "*", " *",
)


def _single_token_id(tokenizer, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
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
