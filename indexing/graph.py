"""The graph index: documents, spans and the entities they mention, as one persisted,
incrementally maintained graph per collection, for expanding retrieval from anchor spans
to structurally or semantically related spans (multi-hop questions).

    >>> graph = GraphIndex(Path("/tmp/spanrag-data/graph.sqlite3"))    # doctest: +SKIP
    >>> graph.update_document("docs", doc, spans, similar={"a#2": [("b#5", 0.83)]})  # doctest: +SKIP
    >>> graph.neighbours("docs", "a#2", {"mentions"}, hops=2)          # doctest: +SKIP
    {'b#3': 2, 'b#4': 2}

Nodes are strings: ``doc:<doc_id>``, ``span:<span_id>`` and ``ent:<normalized entity>``.
Edges have a ``kind``:

* ``parent``: span -> its parent span; the top span (no parent) and every section span
  also -> ``doc:<doc_id>``.
* ``next``: span -> the next span of the same granularity under the same parent.
* ``mentions``: paragraph, sentence and row spans -> every entity their text mentions
  (:func:`extract_entities`), and ``doc:<doc_id>`` -> the entity of its own title.
* ``similar``: span -> a span of another document, weight = cosine; computed by the
  caller (a dense search per span) and passed to :meth:`GraphIndex.update_document`.

Every edge is owned by the document it was built from and is stored with the document
its destination belongs to when that is another one (``similar`` edges). A write replaces
exactly one document's rows in one SQLite transaction; two documents mentioning the same
entity meet at the shared ``ent:`` node, so nothing else needs storing or fixing up, and
an entity nobody mentions any more simply has no edges left. Edges other documents hold
into a document (``similar``) are dropped when it is deleted or re-indexed with another
``content_hash``; the graph is a cache keyed by a per-collection write counter.

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
import sqlite3
import threading
import unicodedata
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from indexing.spans import Document, Span

STOPWORDS = frozenset("""
a an the this that these those there here then thus he she it its his her hers him they
them their theirs we us our you your i me my in on at by for from with without to of as
into onto upon over under about after before during since until while when where which
who whom whose what why how if but and or nor so yet also although though however
despite both each either neither all any some many most several one other another such
not no is was are were be been being do does did has have had would could might should
must according following other unlike like among between through throughout within
now later today meanwhile still again soon once instead perhaps only even just very
""".split())
CONNECTORS = frozenset("of the de del della der den di da du des la le van von y and for".split())
ABBREVIATIONS = frozenset("st mt ft dr mr mrs ms jr sr gen col lt sgt rev prof".split())
HONORIFICS = frozenset("sir dame lord lady dr mr mrs ms prof president general king queen saint".split())
SUFFIXES = frozenset("jr sr ii iii".split())
MENTION_GRANULARITIES = frozenset({"paragraph", "sentence", "row"})
EDGE_KINDS = ("parent", "next", "mentions", "similar")

_RAW_TOKEN = re.compile(r"[^\W_]+(?:[-'’.][^\W_]+)*")
_NORM_WORD = re.compile(r"[^\W_]+")
_POSSESSIVE = re.compile(r"['’]s\b")
_QUALIFIER = re.compile(r"\s*\([^()]*\)\s*$")
_DOT_GAP = re.compile(r"\.\s*")
_AMP_GAP = re.compile(r"\s*&\s*")

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL, doc_id TEXT NOT NULL, title TEXT NOT NULL,
    content_hash TEXT NOT NULL, PRIMARY KEY (collection, doc_id));
CREATE TABLE IF NOT EXISTS edges (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL, doc_id TEXT NOT NULL, src TEXT NOT NULL, dst TEXT NOT NULL,
    kind TEXT NOT NULL, weight REAL NOT NULL, dst_doc_id TEXT);
CREATE INDEX IF NOT EXISTS edges_by_owner ON edges (collection, doc_id);
CREATE INDEX IF NOT EXISTS edges_by_dst_doc ON edges (collection, dst_doc_id)
    WHERE dst_doc_id IS NOT NULL;
"""


# -- entities ------------------------------------------------------------------------------------
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


def _keep(entity: str) -> bool:
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
    """"J", "J.R.R" or a short title abbreviation ("St", "Dr"): a dot after it does not end a name."""
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
    return [e for e in dict.fromkeys(e for _, e in found) if _keep(e)]


# -- graph index ---------------------------------------------------------------------------------
def doc_of_span(span_id: str) -> str:
    """The document id of a span id ``<doc_id>#<n>``."""
    return span_id.rsplit("#", 1)[0]


def _node_kind(node: str) -> str:
    return {"doc": "doc", "span": "span", "ent": "entity"}[node.split(":", 1)[0]]


@dataclass
class _Cached:
    generation: int
    value: object


@dataclass(frozen=True)
class _Edge:
    src: str
    dst: str
    kind: str
    weight: float = 1.0
    dst_doc_id: str | None = None


def _document_edges(doc: Document, spans: list[Span], titles: TitleMatcher,
                   similar: dict[str, list[tuple[str, float]]] | None = None) -> list[_Edge]:
    """Every edge ``doc`` owns, in a deterministic order (see the module docstring)."""
    doc_node = f"doc:{doc.id}"
    edges: list[_Edge] = []
    title_entity = normalize_entity(doc.title)
    if _keep(title_entity):
        edges.append(_Edge(doc_node, f"ent:{title_entity}", "mentions"))
    short_title = normalize_entity(strip_qualifier(doc.title))  # "Ed Wood (film)" is named "Ed Wood"
    if short_title != title_entity and _keep(short_title):
        edges.append(_Edge(doc_node, f"ent:{short_title}", "mentions"))
    ordered = sorted(spans, key=lambda s: s.order)
    siblings: dict[tuple[str | None, str], list[Span]] = {}
    for span in ordered:
        node = f"span:{span.id}"
        if span.parent_id is not None:
            edges.append(_Edge(node, f"span:{span.parent_id}", "parent"))
        if span.parent_id is None or span.granularity == "section":
            edges.append(_Edge(node, doc_node, "parent"))
        siblings.setdefault((span.parent_id, span.granularity), []).append(span)
        if span.granularity in MENTION_GRANULARITIES:
            # a row's header line names columns, not things the row mentions
            for entity in extract_entities(span.text, titles):
                edges.append(_Edge(node, f"ent:{entity}", "mentions"))
    for group in siblings.values():
        for a, b in zip(group, group[1:]):
            edges.append(_Edge(f"span:{a.id}", f"span:{b.id}", "next"))
    own = {s.id for s in spans}
    for source in sorted(similar or {}):
        if source not in own:
            raise ValueError(f"similar: {source!r} is not a span of document {doc.id!r}")
        for target, cosine in similar[source]:
            target_doc = doc_of_span(target)
            if target_doc != doc.id:
                edges.append(_Edge(f"span:{source}", f"span:{target}", "similar", float(cosine), target_doc))
    return edges


class GraphIndex:
    """The graph of every collection, persisted in its own SQLite file; see the module
    docstring for nodes, edges and how writes stay local to one document.

    >>> index = GraphIndex(Path("/tmp/spanrag-data/graph.sqlite3"))  # doctest: +SKIP
    >>> index.update_document("docs", doc, spans)                     # doctest: +SKIP
    >>> index.personalized_pagerank("docs", {"a#2": 1.0}, top=5)       # doctest: +SKIP
    """

    def __init__(self, path: Path, max_entity_degree: int = 50):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_entity_degree = max_entity_degree
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()
        self._graphs: dict[str, _Cached] = {}
        self._titles: dict[str, _Cached] = {}
        self._titled_cache: dict[str, tuple[nx.MultiDiGraph, dict[str, list[str]]]] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def generation(self, collection: str) -> int:
        """The collection's write counter; every update or delete bumps it."""
        rows = self._query("SELECT generation FROM collections WHERE name = ?", (collection,))
        return rows[0][0] if rows else 0

    def _title_matcher(self, collection: str, generation: int) -> TitleMatcher:
        cached = self._titles.get(collection)
        if cached is None or cached.generation != generation:
            titles = [r[0] for r in self._query(
                "SELECT title FROM documents WHERE collection = ? ORDER BY doc_id", (collection,))]
            cached = self._titles[collection] = _Cached(generation, TitleMatcher.from_titles(titles))
        return cached.value

    def _bump_generation(self, collection: str) -> None:
        """Count one more write of ``collection`` (inside the caller's transaction)."""
        self._db.execute(
            "INSERT INTO collections (name, generation) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET generation = generation + 1", (collection,))

    def _write(self, collection: str, doc_id: str, new: Document | None, edges: list[_Edge],
               drop_incoming: bool | None) -> None:
        """One transaction: drop ``doc_id``'s rows (and, when asked, edges into it), insert
        ``new``'s; ``drop_incoming=None`` means "when the stored hash differs from new's"."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self.generation(collection)
                old = self._db.execute(
                    "SELECT title, content_hash FROM documents WHERE collection = ? AND doc_id = ?",
                    (collection, doc_id)).fetchone()
                if drop_incoming is None:
                    # Same content means the same span ids and texts, so edges other documents
                    # hold into it are still right; with no old version there is nothing stale.
                    drop_incoming = old is not None and new is not None and old[1] != new.content_hash
                self._db.execute("DELETE FROM edges WHERE collection = ? AND doc_id = ?", (collection, doc_id))
                if drop_incoming:
                    self._db.execute(
                        "DELETE FROM edges WHERE collection = ? AND dst_doc_id = ?", (collection, doc_id))
                self._db.execute(
                    "DELETE FROM documents WHERE collection = ? AND doc_id = ?", (collection, doc_id))
                if new is not None:
                    self._db.execute("INSERT INTO documents VALUES (?, ?, ?, ?)",
                                     (collection, doc_id, new.title, new.content_hash))
                    self._db.executemany(
                        "INSERT INTO edges (collection, doc_id, src, dst, kind, weight, dst_doc_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(collection, doc_id, e.src, e.dst, e.kind, e.weight, e.dst_doc_id) for e in edges])
                self._bump_generation(collection)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            # keep the cached titles current without re-reading them, if nobody else wrote
            cached = self._titles.get(collection)
            if cached is not None and cached.generation == before:
                if old is not None:
                    cached.value.remove(old[0])
                if new is not None:
                    cached.value.add(new.title)
                cached.generation = before + 1

    # -- writes --------------------------------------------------------------------------------
    def update_document(self, collection: str, doc: Document, spans: list[Span],
                        similar: dict[str, list[tuple[str, float]]] | None = None,
                        known_titles: Iterable[str] = ()) -> None:
        """Replace ``doc``'s part of the graph in one transaction.

        ``similar`` maps a span id of ``doc`` to its nearest spans of other documents with
        their cosines (same-document neighbours are ignored). Entities are extracted with
        the titles of the collection's documents, ``doc.title`` and ``known_titles`` (pass
        the titles of a batch being ingested, so its documents see each other's titles).
        Edges other documents hold into ``doc`` are dropped when ``doc`` had an older
        version with another ``content_hash``.
        """
        with self._lock:
            matcher = self._title_matcher(collection, self.generation(collection))
            extra = list(dict.fromkeys([doc.title, *known_titles]))
            for title in extra:
                matcher.add(title)
            try:
                edges = _document_edges(doc, spans, matcher, similar)
            finally:
                for title in extra:
                    matcher.remove(title)
            self._write(collection, doc.id, doc, edges, drop_incoming=None)

    def update_documents(
        self,
        collection: str,
        items: Iterable[tuple[Document, list[Span], dict[str, list[tuple[str, float]]] | None]],
        known_titles: Iterable[str] = (),
    ) -> int:
        """:meth:`update_document` for many documents (one transaction each), matching
        ``known_titles`` (e.g. the whole batch's titles) with one title matcher instead of
        rebuilding it per document. Returns the number of documents written."""
        written = 0
        with self._lock:
            matcher = self._title_matcher(collection, self.generation(collection))
            extra = list(dict.fromkeys(known_titles))
            for title in extra:
                matcher.add(title)
            try:
                for doc, spans, similar in items:
                    matcher.add(doc.title)
                    try:
                        edges = _document_edges(doc, spans, matcher, similar)
                    finally:
                        matcher.remove(doc.title)
                    self._write(collection, doc.id, doc, edges, drop_incoming=None)
                    written += 1
            finally:
                for title in extra:
                    matcher.remove(title)
        return written

    def drop_collection(self, collection: str) -> None:
        """Remove every document and edge of ``collection`` in one transaction. The write
        counter goes on (not back to 0), so caches of the old contents never look current."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table in ("edges", "documents"):
                    self._db.execute(f"DELETE FROM {table} WHERE collection = ?", (collection,))
                self._bump_generation(collection)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete_document(self, collection: str, doc_id: str) -> None:
        """Remove ``doc_id``'s edges, every edge into its spans and its hash, in one transaction."""
        self._write(collection, doc_id, None, [], drop_incoming=True)

    # -- repair ----------------------------------------------------------------------------------
    def document_hashes(self, collection: str) -> dict[str, str]:
        """``{doc_id: content_hash}`` of every document in the graph."""
        return dict(self._query(
            "SELECT doc_id, content_hash FROM documents WHERE collection = ? ORDER BY doc_id", (collection,)))

    def stale_documents(self, collection: str, hashes: dict[str, str]) -> list[str]:
        """Documents of ``hashes`` (``{doc_id: content_hash}``, e.g. from the span store) that
        the graph lacks or holds at another version, sorted."""
        stored = self.document_hashes(collection)
        return sorted(d for d, h in hashes.items() if stored.get(d) != h)

    def orphan_documents(self, collection: str, live_doc_ids: set[str]) -> list[str]:
        """Documents in the graph that are not in ``live_doc_ids``, sorted."""
        return sorted(set(self.document_hashes(collection)) - set(live_doc_ids))

    # -- reads -----------------------------------------------------------------------------------
    def graph(self, collection: str) -> nx.MultiDiGraph:
        """The collection's graph (nodes carry ``kind``: doc/span/entity; edges ``kind`` and
        ``weight``), rebuilt from SQLite when its write counter moved. Shared: do not modify.

        Queries read it while writes go on: a built graph is never changed (a write makes
        the next call build a new one), and its counter, documents and edges are read in one
        read transaction, so it is one committed state even when another process writes.
        It may still name documents the span store has lost since; readers skip those."""
        with self._lock:
            if self._db.in_transaction:
                return self._graph(collection)
            self._db.execute("BEGIN")
            try:
                return self._graph(collection)
            finally:
                self._db.execute("COMMIT")

    def _graph(self, collection: str) -> nx.MultiDiGraph:
        with self._lock:
            generation = self.generation(collection)
            cached = self._graphs.get(collection)
            if cached is not None and cached.generation == generation:
                return cached.value
            g = nx.MultiDiGraph()
            for (doc_id,) in self._query(
                    "SELECT doc_id FROM documents WHERE collection = ? ORDER BY doc_id", (collection,)):
                g.add_node(f"doc:{doc_id}", kind="doc")
            rows = self._query(
                "SELECT src, dst, kind, weight FROM edges WHERE collection = ? ORDER BY row_id", (collection,))
            for src, dst, kind, weight in rows:
                for node in (src, dst):
                    if node not in g:
                        g.add_node(node, kind=_node_kind(node))
                g.add_edge(src, dst, kind=kind, weight=weight)
            self._graphs[collection] = _Cached(generation, g)
            return g

    def _is_hub(self, g: nx.MultiDiGraph, node: str) -> bool:
        return node.startswith("ent:") and g.in_degree(node) > self.max_entity_degree

    def _adjacent(self, g: nx.MultiDiGraph, node: str, kinds: set[str] | None) -> list[str]:
        """Neighbours over edges of ``kinds`` (all when None) in both directions, in a stable order."""
        out: dict[str, None] = {}
        for adjacency in (g.succ[node], g.pred[node]):
            for other, edges in adjacency.items():
                if kinds is None or any(e["kind"] in kinds for e in edges.values()):
                    out[other] = None
        return list(out)

    def _ball(self, g: nx.MultiDiGraph, starts: list[str], hops: int,
              kinds: set[str] | None) -> dict[str, int]:
        """Breadth-first hop distances from ``starts``; hub entities are reached, not passed."""
        dist = {s: 0 for s in starts}
        frontier = deque(starts)
        while frontier:
            node = frontier.popleft()
            if dist[node] >= hops or (dist[node] > 0 and self._is_hub(g, node)):
                continue
            for other in self._adjacent(g, node, kinds):
                if other not in dist:
                    dist[other] = dist[node] + 1
                    frontier.append(other)
        return dist

    def neighbours(self, collection: str, span_id: str, kinds: set[str], hops: int = 1) -> dict[str, int]:
        """Span ids within ``hops`` edges of ``kinds`` of ``span_id`` (either direction;
        ``doc:`` and ``ent:`` nodes are passed through but not returned; an entity with more
        than ``max_entity_degree`` mentions is not passed through), with their distance,
        nearest first then by id. The span itself is not included."""
        unknown = set(kinds) - set(EDGE_KINDS)
        if unknown:
            raise ValueError(f"unknown edge kinds {sorted(unknown)}; known: {EDGE_KINDS}")
        g = self.graph(collection)
        start = f"span:{span_id}"
        if start not in g:
            return {}
        dist = self._ball(g, [start], hops, set(kinds))
        found = [(d, n[5:]) for n, d in dist.items() if n.startswith("span:") and n != start]
        return {s: d for d, s in sorted(found)}

    def personalized_pagerank(self, collection: str, seeds: dict[str, float], alpha: float = 0.85,
                              top: int = 50) -> list[tuple[str, float]]:
        """Spans ranked by PageRank personalized on ``seeds`` (``{span_id: weight}``), over the
        undirected graph within 2 hops of the seeds (hub entities not passed through);
        ``[(span_id, score)]``, best first, seeds included."""
        g = self.graph(collection)
        present = {f"span:{s}": w for s, w in seeds.items() if f"span:{s}" in g and w > 0}
        if not present:
            return []
        nodes = sorted(self._ball(g, sorted(present), 2, None))
        sub = nx.MultiGraph()
        sub.add_nodes_from(nodes)
        keep = set(nodes)
        for u in nodes:
            for v, edges in g.succ[u].items():
                if v in keep:
                    for e in edges.values():
                        sub.add_edge(u, v, weight=max(float(e["weight"]), 0.0))
        scores = nx.pagerank(sub, alpha=alpha, personalization=present, weight="weight")
        ranked = sorted(((-score, n[5:]) for n, score in scores.items() if n.startswith("span:")))
        return [(s, -neg) for neg, s in ranked[:top]]

    def linked_documents(self, collection: str, span_ids: list[str]) -> list[tuple[str, str, str]]:
        """Documents named by what these spans mention: ``[(doc_id, entity, span_id)]`` for each entity
        a span mentions that is another document's title, in span then mention order, each
        document once. This is the bridge of a multi-hop question (a film's paragraph names
        its director; the director's own document holds the answer)."""
        g = self.graph(collection)
        titled = self._titled(collection, g)
        out: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for span_id in span_ids:
            node = f"span:{span_id}"
            if node not in g:
                continue
            own = doc_of_span(span_id)
            for entity, edges in g.succ[node].items():
                for doc_id in titled.get(entity, ()):
                    if doc_id != own and doc_id not in seen and any(
                        e["kind"] == "mentions" for e in edges.values()
                    ):
                        seen.add(doc_id)
                        out.append((doc_id, entity[4:], span_id))
        return out

    def _titled(self, collection: str, g: nx.MultiDiGraph) -> dict[str, list[str]]:
        """``{entity node: [doc ids whose title it is]}`` for the graph ``g`` (cached with it)."""
        cached = self._titled_cache.get(collection)
        if cached is not None and cached[0] is g:
            return cached[1]
        titled: dict[str, list[str]] = {}
        for node in g:
            if node.startswith("doc:"):
                for entity, edges in g.succ[node].items():
                    if any(e["kind"] == "mentions" for e in edges.values()):
                        titled.setdefault(entity, []).append(node[4:])
        titled = {k: sorted(v) for k, v in titled.items()}
        self._titled_cache[collection] = (g, titled)
        return titled

    def entities_of(self, collection: str, span_id: str) -> list[str]:
        """The normalized entities ``span_id`` mentions, in order of first mention."""
        g = self.graph(collection)
        node = f"span:{span_id}"
        if node not in g:
            return []
        return [v[4:] for v, edges in g.succ[node].items()
                if any(e["kind"] == "mentions" for e in edges.values())]

    def stats(self, collection: str) -> dict:
        """Node counts by kind, edge counts by kind, documents and the write counter."""
        g = self.graph(collection)
        nodes: dict[str, int] = {}
        for _, kind in g.nodes(data="kind"):
            nodes[kind] = nodes.get(kind, 0) + 1
        edges: dict[str, int] = {}
        for _, _, kind in g.edges(data="kind"):
            edges[kind] = edges.get(kind, 0) + 1
        return {"documents": nodes.get("doc", 0), "nodes": dict(sorted(nodes.items())),
                "edges": dict(sorted(edges.items())), "generation": self._graphs[collection].generation}

    def close(self) -> None:
        with self._lock:
            self._db.close()
