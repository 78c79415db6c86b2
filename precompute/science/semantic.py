"""Semantic neighbours of every token, by the paper's rules as the authors built their table (the "full version"
of ``cspa/cspa_semantic_similarity.py`` in callummcdougall/SERI-MATS-2023-Streamlit-pages; written out step by
step in the project's reference notes, §2.8). "Is one token" always means: the string, encoded without BOS, is
exactly one token id.

1. **Which tokens get rules**: a token whose decoded string ``s`` re-encodes to exactly one token. Others (byte
   fragments) have only themselves. Two ids with one string share one entry; special tokens are nobody's
   neighbour.
2. **The word family** of ``w`` = ``s`` stripped and lower-cased (just ``[w]`` when ``len(w) <= 2``): the shortest
   WordNet lemma of ``w`` as a verb, a noun and an adjective (WordNet's morphy, read by nltk), then from that lemma
   its conjugations and plural (lemminflect: the authors' pattern.en is unmaintained), four -ing forms, the noun
   suffixes -er/-ner/-ion (also on the lemma cut by one letter) and the adjective suffixes -r/-ic/-al/-ous/-able/
   -ive, each with and without a plural s, and lemma[:-1] + "ier". A candidate stays when " " + it is one token.
3. **Equivalents** ("singles"): ``s`` stripped in its own case, then the family; each with its ``str.capitalize``
   and ``str.upper`` forms; then every one of those with a leading space; kept when one token. Ordered: ``s``,
   its space variant, its plural variant with a space, then without, then the rest.
4. **Substrings**: the core word is ``s`` when it has no leading space, ``s[1:]`` when a space is followed by an
   upper-case letter (" Berkeley"), and none otherwise (" conversion" has no substrings). When the core word
   encodes into several pieces of at least 3 characters each, those pieces, minus the equivalents and
   superstrings, longest first.
5. **Superstrings**: every token listing ``s`` among its substrings, minus the equivalents.

WordNet's database is Debian's ``wordnet-base`` (``/usr/share/wordnet``; or ``$CSE_WORDNET_DIR``). Where it is
missing, lemminflect's lemmas stand in, and ``rules()`` says so. The manifest records ``rules()``. Results are
arrays of token ids, padded with -1, never pickles. ``neighbour_table`` flattens them for CSPA with k_s > 1.
"""

from __future__ import annotations

import functools
import os
from importlib.metadata import version
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

RULE_SET = "paper §2.8 (cspa_semantic_similarity.py, full version)"
MIN_PIECE_CHARS = 3
NOUN_SUFFIXES = ("er", "ner", "ion")
ADJECTIVE_SUFFIXES = ("r", "ic", "al", "ous", "able", "ive")
PLURAL = ("", "s")
WORDNET_DIRS = ("/usr/share/wordnet",)  # Debian's wordnet-base
WORDNET_FILES = ("index.noun", "index.verb", "index.adj", "noun.exc", "verb.exc", "adj.exc")


def wordnet_dir() -> Path | None:
    """Where WordNet 3.0's database files are ($CSE_WORDNET_DIR, else Debian's wordnet-base), or None."""
    for d in ([os.environ["CSE_WORDNET_DIR"]] if os.environ.get("CSE_WORDNET_DIR") else []) + list(WORDNET_DIRS):
        if all((Path(d) / f).is_file() for f in WORDNET_FILES):
            return Path(d)
    return None


@functools.cache
def _morphy(root: str):
    """nltk's WordNet reader with only what morphy needs (the index and exception files): Debian's package has no
    ``lexnames`` file, which the full reader opens first."""
    from collections import defaultdict

    from nltk.corpus.reader import CorpusReader
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class MorphyReader(WordNetCorpusReader):
        def __init__(self, path: str):
            CorpusReader.__init__(self, path, list(WORDNET_FILES), encoding=self._ENCODING)
            self._lemma_pos_offset_map: defaultdict[str, dict] = defaultdict(dict)
            self._exception_map: dict[str, dict] = {}
            self.satellite_offsets: set[int] = set()
            self._load_lemma_pos_offset_map()
            self._load_exception_map()

    return MorphyReader(root)


def rules() -> dict:
    """What builds the table here: the rule set and the libraries (recorded in the manifest)."""
    root = wordnet_dir()
    return {
        "rules": RULE_SET,
        "lemmatizer": f"WordNet 3.0 morphy via nltk {version('nltk')} ({root})"
        if root is not None
        else f"lemminflect {version('lemminflect')} lemmas (WordNet not installed)",
        "forms": f"lemminflect {version('lemminflect')} (conjugations, plural) and the paper's suffix rules",
    }


@functools.cache
def lemma(word: str) -> str:
    """The shortest of ``word``'s lemmas as a verb, a noun and an adjective (itself when none is known)."""
    root = wordnet_dir()
    if root is not None:
        reader = _morphy(str(root))
        found = []
        for pos in ("v", "n", "a"):  # nltk's WordNetLemmatizer.lemmatize(word, pos) for each
            forms = reader._morphy(word, pos)
            found.append(min(forms, key=len) if forms else word)
        return min(found, key=len)
    from lemminflect import getAllLemmas

    found = [getAllLemmas(word, upos).get(upos, ()) for upos in ("VERB", "NOUN", "ADJ")]
    return min([forms[0] for forms in found if forms] + [word], key=len)


@functools.cache
def _conjugations(lem: str) -> tuple[str, ...]:
    """The lemma's verb forms and its plural and singular (pattern.en's conjugate/pluralize/singularize in the
    authors' code; lemminflect here, with its rules for words outside its dictionary)."""
    from lemminflect import getAllInflections, getAllInflectionsOOV, getAllLemmas

    verb = getAllInflections(lem, upos="VERB") or getAllInflectionsOOV(lem, upos="VERB")
    noun = getAllInflections(lem, upos="NOUN") or getAllInflectionsOOV(lem, upos="NOUN")
    singular = getAllLemmas(lem, upos="NOUN").get("NOUN", ())
    forms = [f for fs in verb.values() for f in fs] + list(noun.get("NNS", ())) + list(singular)
    return tuple(dict.fromkeys(forms))


def family_candidates(w: str) -> list[str]:
    """Step 1's candidates for the lower-case word ``w`` (before the one-token filter), from its lemma."""
    lem = lemma(w)
    out = list(_conjugations(lem))
    if len(lem) > 2:
        out += [lem[:-1] + "ing", lem[:-2] + "ying", lem + lem[-1] + "ing", lem + "ing"]
        out += [v + suffix + p for v in (lem, lem[:-1]) for suffix in NOUN_SUFFIXES for p in PLURAL]
    out += [lem + suffix + p for suffix in ADJECTIVE_SUFFIXES for p in PLURAL]
    out.append(lem[:-1] + "ier")
    return out


def family(w: str, one_token: set[str]) -> list[str]:
    """``[w]`` then the candidates whose space-prefixed form is one token (``w`` lower-case and stripped)."""
    if len(w) <= 2:
        return [w]
    return list(dict.fromkeys([w] + [c for c in family_candidates(w) if " " + c in one_token]))


def singles(s: str, one_token: set[str]) -> list[str]:
    """Step 2: the equivalent strings of ``s`` that are one token (``s`` itself among them when it is)."""
    base = [s.strip()] + family(s.strip().lower(), one_token)
    forms = base + [x.capitalize() for x in base] + [x.upper() for x in base]
    forms += [" " + x for x in forms]
    return [x for x in dict.fromkeys(forms) if x in one_token]


def core_words(s: str) -> list[str]:
    """Step 3: ``s`` without a leading space; ``s[1:]`` after a space and an upper-case letter; else none."""
    if not s.startswith(" "):
        return [s]
    return [s[1:]] if len(s) > 1 and s[1].isupper() else []


def ordered_equivalents(s: str, found: list[str]) -> list[str]:
    """Step 5: ``s``, its space variant, its plural variant with a leading space, then without, then the rest."""
    head = [s]
    space = s[1:] if s.startswith(" ") else " " + s
    stem = s.strip()
    plural = stem[:-1] if stem.endswith("s") else stem + "s"
    for x in (space, " " + plural, plural):
        if x in found and x not in head:
            head.append(x)
    return head + [x for x in found if x not in head]


def semantic_neighbours(tokenizer) -> dict[str, Int[Tensor, "d_vocab n"]]:
    """Equivalents, superstrings and substrings for every token, as -1 padded id arrays ``[d_vocab, n]``."""
    n = len(tokenizer)
    strings = [tokenizer.decode([i]) for i in range(n)]
    special = {t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
    special |= set(getattr(tokenizer, "all_special_ids", []))
    index: dict[str, int] = {}  # string -> its first (non-special) id: keys are strings, as in the paper's table
    for i, s in enumerate(strings):
        if i not in special:
            index.setdefault(s, i)
    keys = list(index)
    encoded = _encode(tokenizer, keys)
    one_token = {s for s, ids in zip(keys, encoded) if len(ids) == 1}
    # the core words' pieces, encoded in one batch
    cores = sorted({c for s in keys if s in one_token for c in core_words(s)})
    pieces = dict(zip(cores, _encode(tokenizer, cores)))
    eq_s: dict[str, list[str]] = {}
    sub_s: dict[str, list[str]] = {}
    for s in keys:
        if s not in one_token:  # a byte fragment: only itself
            eq_s[s], sub_s[s] = [s], []
            continue
        eq_s[s] = ordered_equivalents(s, [x for x in dict.fromkeys([s] + singles(s, one_token))])
        subs: list[str] = []
        for c in core_words(s):
            ids = pieces[c]
            texts = [strings[j] for j in ids]
            if len(ids) > 1 and all(len(t) >= MIN_PIECE_CHARS for t in texts):
                subs += [t for t in texts if t in index]
        sub_s[s] = list(dict.fromkeys(subs))
    sup_s: dict[str, list[str]] = {s: [] for s in keys}
    for s in keys:  # in the order tokens are processed
        for piece in sub_s[s]:
            sup_s[piece].append(s)
    eq: list[list[int]] = [[i] for i in range(n)]
    sup: list[list[int]] = [[] for _ in range(n)]
    sub: list[list[int]] = [[] for _ in range(n)]
    for s, first in index.items():
        equivalents = eq_s[s]
        superstrings = [t for t in dict.fromkeys(sup_s[s]) if t not in equivalents]
        substrings = sorted(
            (t for t in sub_s[s] if t not in equivalents and t not in superstrings), key=len, reverse=True
        )
        eq_ids = [index[t] for t in equivalents]
        eq[first], sup[first], sub[first] = eq_ids, [index[t] for t in superstrings], [index[t] for t in substrings]
    for i, s in enumerate(strings):  # a second id of the same string: itself first, then the shared entry
        shared = index.get(s)
        if shared is not None and shared != i:
            eq[i] = [i] + eq[shared]
            sup[i], sub[i] = list(sup[shared]), list(sub[shared])
    return {"equivalents": _pad(eq), "superstrings": _pad(sup), "substrings": _pad(sub)}


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's ids without BOS (one batch call where the tokenizer takes a list)."""
    if not texts:
        return []
    try:
        out = tokenizer(texts, add_special_tokens=False)["input_ids"]
        if isinstance(out, list) and len(out) == len(texts) and all(isinstance(x, list) for x in out):
            return out
    except (TypeError, ValueError, KeyError):
        pass
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


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
