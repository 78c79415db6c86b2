"""Real English that every machine has without a download: the prose of CPython's reference manual.

Every CPython ships the text of its language reference's topics as ``pydoc_data.topics`` (what ``help("if")``
prints; 79 topics, about 465 kB in 3.11; Python Software Foundation licence, the licence of CPython itself). It is
human-written technical English with code examples, grammar rules and tables in between.

``documents()`` turns it into documents, named ``python-docs`` wherever a dataset is taken (``--dataset
python-docs``):

* each topic is split into paragraphs at blank lines; the manual's hard-wrapped lines are joined into one line per
  paragraph (the model reads prose as prose, not a newline every 70 characters);
* code, grammar and tables are left out: paragraphs beginning with a table border (``+``, ``|``), an interpreter
  prompt (``>>>``, ``...``), and indented (3+ spaces) paragraphs that are not sentences (they do not end in
  ``.``, ``?`` or ``!``); section headings stay as a line of their own, their underline dropped;
* consecutive paragraphs of one topic are gathered into a document until it holds at least ``MIN_CHARS``
  characters (a document never spans two topics); the text is the same on every machine with the same CPython.
"""

from __future__ import annotations

import hashlib
import platform
import re
from functools import lru_cache

NAME = "python-docs"
MIN_CHARS = 1200
LICENCE = "PSF-2.0 (Python Software Foundation License, CPython's own)"
_UNDERLINE = re.compile(r"^[*=\-~^#\"]{3,}$")


def _topics() -> dict[str, str]:
    from pydoc_data.topics import topics

    return topics


def _paragraphs(text: str) -> list[str]:
    """The topic's prose paragraphs (one line each) and headings, in order."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        if len(lines) == 2 and _UNDERLINE.match(lines[1].strip()):
            out.append(lines[0].strip())  # a heading
            continue
        first = lines[0]
        stripped = first.lstrip()
        if stripped.startswith(("+", "|", ">>>", "...")):
            continue  # table or interpreter session
        joined = " ".join(block.split())
        if len(first) - len(stripped) >= 3 and not joined.endswith((".", "?", "!")):
            continue  # code or grammar
        out.append(joined)
    return out


@lru_cache(maxsize=4)
def documents(min_chars: int = MIN_CHARS) -> tuple[str, ...]:
    """The documents, in topic order (sorted topic names), each at least ``min_chars`` characters where its topic
    has that much prose (a topic's last, shorter rest is its own document)."""
    docs: list[str] = []
    for name in sorted(_topics()):
        current: list[str] = []
        size = 0
        for par in _paragraphs(_topics()[name]):
            current.append(par)
            size += len(par) + 2
            if size >= min_chars:
                docs.append("\n\n".join(current))
                current, size = [], 0
        if current:
            docs.append("\n\n".join(current))
    return tuple(docs)


def provenance() -> dict:
    """Where the text came from and how it was cut, recorded with every run and survey that uses it."""
    docs = documents()
    return {
        "source": f"pydoc_data.topics of CPython {platform.python_version()} (the reference manual's topics)",
        "licence": LICENCE,
        "n_topics": len(_topics()),
        "n_documents": len(docs),
        "n_characters": sum(map(len, docs)),
        "sha256": hashlib.sha256("\x00".join(docs).encode()).hexdigest(),
        "splitting": f"prose paragraphs (code, grammar and tables left out, lines unwrapped) gathered per topic into "
        f"documents of at least {MIN_CHARS} characters",
    }
