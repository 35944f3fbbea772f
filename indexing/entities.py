"""Entity extraction for the graph index: which names a text mentions, as normalized
entity strings (the ``ent:`` nodes of :mod:`indexing.graph`).

The entity rule (no model, deliberately transparent):

1. Text is cut into word tokens (letters/digits, with inner hyphens, dots and apostrophes).
2. A *capitalized phrase* is a maximal run of capitalized tokens separated by plain
   whitespace. Inside a run may also stand: digit tokens after a capitalized token
   ("Apollo 11"), "&", a dot after an initial or a short abbreviation ("J. R. R. Tolkien",
   "St. Louis"), and up to two lowercase connectors (:data:`CONNECTORS`: "of", "the",
   "de", "and", ...) when a capitalized token follows ("University of the Arts"). A
   possessive ends a run ("Nelson Rockefeller's Committee" is two phrases).
3. Stopword-like capitalized words (:data:`STOPWORDS`: "The", "In", "He", "Which", ...,
   typically sentence-initial) are dropped from both ends of a run; a run left empty is
   no entity. A run joined by "and"/"&" yields the whole run and each side
   ("Scott Derrickson and Ed Wood" -> all three), since "and" may or may not be part of
   a name; a run with a leading honorific or trailing "Jr"/"Sr" also yields the run
   without it ("Sir Alex Ferguson" -> also "Alex Ferguson").
4. Known titles (the collection's document titles) are also matched, case-insensitively
   on normalized tokens, with or without a parenthesised qualifier ("Ed Wood (film)"
   matches "Ed Wood"); a match yields the normalized *full* title, the entity the titled
   document's ``doc:`` node mentions. A one-word title must appear capitalized; a title
   that is a single stopword or a number is never matched.
5. Everything is normalized by :func:`normalize_entity` (HTML entities decoded, accents
   removed, casefolded, possessive "'s" dropped, punctuation to spaces, a leading "the"
   dropped) and deduplicated in order of first occurrence; results shorter than 2
   characters or made of digits only are dropped.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

STOPWORDS = frozenset(
    """
a an the this that these those there here then thus he she it its his her hers him they
them their theirs we us our you your i me my in on at by for from with without to of as
into onto upon over under about after before during since until while when where which
who whom whose what why how if but and or nor so yet also although though however
despite both each either neither all any some many most several one other another such
not no is was are were be been being do does did has have had would could might should
must according following other unlike like among between through throughout within
now later today meanwhile still again soon once instead perhaps only even just very
""".split()
)
CONNECTORS = frozenset("of the de del della der den di da du des la le van von y and for".split())
ABBREVIATIONS = frozenset("st mt ft dr mr mrs ms jr sr gen col lt sgt rev prof".split())
HONORIFICS = frozenset("sir dame lord lady dr mr mrs ms prof president general king queen saint".split())
SUFFIXES = frozenset("jr sr ii iii".split())

_RAW_TOKEN = re.compile(r"[^\W_]+(?:[-'’.][^\W_]+)*")
_NORM_WORD = re.compile(r"[^\W_]+")
_POSSESSIVE = re.compile(r"['’]s\b")
_QUALIFIER = re.compile(r"\s*\([^()]*\)\s*$")
_DOT_GAP = re.compile(r"\.\s*")
_AMP_GAP = re.compile(r"\s*&\s*")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", html.unescape(text))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _norm_words(text: str) -> list[str]:
    return _NORM_WORD.findall(_POSSESSIVE.sub("", _fold(text)))


def normalize_entity(text: str) -> str:
    """The canonical form of an entity name.

    >>> normalize_entity("  The Beatles' ")
    'beatles'
    >>> normalize_entity("Ed Wood's"), normalize_entity("Amélie (film)")
    ('ed wood', 'amelie film')
    """
    words = _norm_words(text)
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    return " ".join(words)


def strip_qualifier(title: str) -> str:
    """A title without its trailing parenthesised qualifier: "Ed Wood (film)" -> "Ed Wood"."""
    return _QUALIFIER.sub("", title).strip()


def keep_entity(entity: str) -> bool:
    """Whether a normalized entity is worth a node: 2+ characters, not digits only, not a stopword."""
    return len(entity) >= 2 and not entity.replace(" ", "").isdigit() and entity not in STOPWORDS


@dataclass
class TitleMatcher:
    """Known titles, looked up by their normalized word sequences (with and without a
    parenthesised qualifier); keeps counts so titles can be removed again.

    >>> m = TitleMatcher.from_titles(["Ed Wood (film)", "Woodson, Arkansas"])
    >>> extract_entities("He met ed wood in Woodson, Arkansas.", m)
    ['ed wood film', 'woodson', 'woodson arkansas', 'arkansas']
    """

    keys: dict[tuple[str, ...], dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_titles(cls, titles: Iterable[str]) -> TitleMatcher:
        matcher = cls()
        for title in titles:
            matcher.add(title)
        return matcher

    @staticmethod
    def _keys(title: str) -> set[tuple[str, ...]]:
        keys = set()
        for form in (title, strip_qualifier(title)):
            words = tuple(_norm_words(form))
            if words and words[0] == "the" and len(words) > 1:
                words = words[1:]
            if words and not (len(words) == 1 and (words[0] in STOPWORDS or words[0].isdigit())):
                keys.add(words)
        return keys

    def add(self, title: str) -> None:
        entity = normalize_entity(title)
        for key in self._keys(title):
            entities = self.keys.setdefault(key, {})
            entities[entity] = entities.get(entity, 0) + 1

    def remove(self, title: str) -> None:
        entity = normalize_entity(title)
        for key in self._keys(title):
            entities = self.keys.get(key, {})
            if entities.get(entity, 0) > 1:
                entities[entity] -= 1
            else:
                entities.pop(entity, None)
                if not entities:
                    self.keys.pop(key, None)

    def find(self, words: list[tuple[str, bool, int]]) -> list[tuple[int, str]]:
        """``(offset, entity)`` of the titles occurring in ``words``, a text's
        ``(normalized word, capitalized, offset of its token)`` list."""
        if not self.keys:
            return []
        lengths = sorted({len(k) for k in self.keys})
        folded = [w for w, _, _ in words]
        found: list[tuple[int, str]] = []
        for i in range(len(words)):
            for n in lengths:
                if i + n > len(words):
                    break
                entities = self.keys.get(tuple(folded[i : i + n]))
                if entities and (n > 1 or words[i][1]):
                    found.extend((words[i][2], e) for e in sorted(entities))
        return found


def _capitalized(token: str) -> bool:
    return token[0].isupper()


def _is_initial(token: str) -> bool:
    """ "J", "J.R.R" or a short title abbreviation ("St", "Dr"): a dot after it does not end a name."""
    return all(len(p) == 1 and p.isupper() for p in token.split(".")) or token.casefold() in ABBREVIATIONS


def _phrases(text: str) -> tuple[list[tuple[int, int]], list[tuple[str, bool, int]]]:
    """Capitalized phrases as (start, end) offsets, and every normalized word with whether
    its raw token was capitalized and where that token starts (for title matching)."""
    tokens = [(m.start(), m.end(), m.group()) for m in _RAW_TOKEN.finditer(text)]
    words = [(w, _capitalized(tok), start) for start, _, tok in tokens for w in _norm_words(tok)]

    def joined(a: int, b: int) -> bool:
        """May token ``b`` follow token ``a`` in the same run, given the text between?"""
        if _POSSESSIVE.search(tokens[a][2]):  # "Nelson Rockefeller's Committee": two things
            return False
        gap = text[tokens[a][1] : tokens[b][0]]
        if not gap or gap.isspace() or _AMP_GAP.fullmatch(gap):
            return True
        return _is_initial(tokens[a][2]) and bool(_DOT_GAP.fullmatch(gap))

    runs: list[list[int]] = []
    i = 0
    while i < len(tokens):
        if not _capitalized(tokens[i][2]):
            i += 1
            continue
        run = [i]
        j = i + 1
        while j < len(tokens) and joined(j - 1, j):
            tok = tokens[j][2]
            if _capitalized(tok) or tok[0].isdigit():
                run.append(j)
                j += 1
                continue
            # lowercase connectors ("of the") only when a capitalized word comes after them
            k = j
            while k < len(tokens) and k - j < 2 and tokens[k][2] in CONNECTORS and joined(k - 1, k):
                k += 1
            if j < k < len(tokens) and joined(k - 1, k) and _capitalized(tokens[k][2]):
                run.extend(range(j, k + 1))
                j = k + 1
                continue
            break
        runs.append(run)
        i = j

    spans: list[tuple[int, int]] = []
    for run in runs:
        for part in _variants(run, tokens, text):
            while part and tokens[part[0]][2].casefold() in STOPWORDS:
                part = part[1:]
            while part and (tokens[part[-1]][2].casefold() in STOPWORDS or tokens[part[-1]][2] in CONNECTORS):
                part = part[:-1]
            if part:
                spans.append((tokens[part[0]][0], tokens[part[-1]][1]))
    return spans, words


def _variants(run: list[int], tokens: list, text: str) -> list[list[int]]:
    """The run itself, then its pieces around "and"/"&", then each of those without a
    leading honorific or a trailing "Jr"/"Sr" ("Sir Alex Ferguson" -> "Alex Ferguson")."""
    pieces: list[list[int]] = [[]]
    for pos, t in enumerate(run):
        if tokens[t][2] == "and":
            pieces.append([])
            continue
        if pos and "&" in text[tokens[run[pos - 1]][1] : tokens[t][0]]:
            pieces.append([])
        pieces[-1].append(t)
    out = [run] if len(pieces) == 1 else [run, *[p for p in pieces if p]]
    for part in list(out):
        trimmed = part
        while len(trimmed) > 2 and tokens[trimmed[0]][2].casefold() in HONORIFICS:
            trimmed = trimmed[1:]
        while len(trimmed) > 2 and tokens[trimmed[-1]][2].casefold() in SUFFIXES:
            trimmed = trimmed[:-1]
        if trimmed != part:
            out.append(trimmed)
    return out


def extract_entities(text: str, known_titles: Iterable[str] | TitleMatcher = ()) -> list[str]:
    """Normalized entities mentioned in ``text``, in order of first occurrence (the rule is
    in the module docstring).

    >>> extract_entities("The film stars Johnny Depp as Ed Wood, with Bela Lugosi.")
    ['johnny depp', 'ed wood', 'bela lugosi']
    >>> extract_entities("It was set in the University of Oxford.", ["Oxford"])
    ['university of oxford', 'oxford']
    """
    matcher = known_titles if isinstance(known_titles, TitleMatcher) else TitleMatcher.from_titles(known_titles)
    spans, words = _phrases(text)
    found = [(s, normalize_entity(text[s:e])) for s, e in spans] + matcher.find(words)
    found.sort(key=lambda hit: hit[0])  # stable: at one offset, phrases before titles
    return [e for e in dict.fromkeys(e for _, e in found) if keep_entity(e)]
