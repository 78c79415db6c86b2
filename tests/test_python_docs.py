"""The ``python-docs`` dataset: CPython's reference manual (pydoc_data.topics) cut into prose documents."""

import re

from precompute.data import python_docs
from precompute.data.sources import load_documents, provenance

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def test_documents_are_prose_paragraphs_of_the_topics():
    docs = python_docs.documents()
    assert load_documents("python-docs") == list(docs)
    assert len(docs) > 200
    topics = python_docs._topics()
    for doc in docs:
        for par in doc.split("\n\n"):
            assert "\n" not in par and par == " ".join(par.split())  # hard-wrapped lines joined
            assert not par.startswith(("+", "|", ">>>"))  # no tables, no interpreter sessions
    # most documents reach the minimum size (only a topic's last rest may be shorter)
    assert sum(len(d) >= python_docs.MIN_CHARS for d in docs) >= 0.75 * len(docs)
    # every paragraph is the topic's own text, whitespace normalised
    flat = {name: " ".join(text.split()) for name, text in topics.items()}
    for doc in docs[::25]:
        first = doc.split("\n\n")[0]
        assert any(first in t for t in flat.values())


def test_paragraph_rules_on_a_hand_made_topic():
    text = (
        "Heading\n*******\n\nA sentence that is\nwrapped here.\n\n   x = f(1)\n   y = 2\n\n"
        "   Note: an indented sentence.\n\n+---+---+\n| a | b |\n+---+---+\n\n>>> 1 + 1\n2\n\n"
        "* a bullet\n  continues.\n"
    )
    assert python_docs._paragraphs(text) == [
        "Heading",
        "A sentence that is wrapped here.",
        "Note: an indented sentence.",
        "* a bullet continues.",
    ]


def test_provenance_names_source_licence_and_a_hash_of_the_text():
    p = provenance("python-docs")
    assert p["real_text"] is True and "pydoc_data.topics of CPython 3." in p["source"] and "PSF" in p["licence"]
    assert p["n_documents"] == len(python_docs.documents()) and re.fullmatch(r"[0-9a-f]{64}", p["sha256"])
    assert provenance("synthetic")["real_text"] is False
