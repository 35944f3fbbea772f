"""The HTTP API through a real ``uvicorn`` process on loopback (one server per module)."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from app.server_process import SpanragServer

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
C = "docs"
MERCURY = "How many days does Mercury take to orbit the Sun?"
# doc ids are free-form strings; these contain '/' and must survive the URL path
SAMPLE_IDS = {
    "solar-system.html": "samples/solar-system.html",
    "coffee-prices.csv": "samples/coffee-prices.csv",
    "tea-notes.txt": "samples/tea-notes.txt",
}
JUPITER = {
    "id": "notes/planets/jupiter",
    "title": "Jupiter",
    "text": "Jupiter is the largest planet. It has a Great Red Spot, a storm larger than Earth.",
    "metadata": {"author": "test", "year": 2024},
}
CITATION_KEYS = {"id", "span_id", "doc_id", "text", "start", "end", "heading_path"}
CONTEXT_KEYS = {"span_id", "doc_id", "text", "score", "granularity"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real uvicorn process serving ``app.api:create_app`` on a free loopback port."""
    root = tmp_path_factory.mktemp("api")
    with SpanragServer(root / "data", cwd=root) as running:
        yield running.base_url


@pytest.fixture(scope="module")
def client(server):
    """An open (keyless) loopback server: multipart uploads carry ``X-Requested-With``, as
    every non-browser client may (a cross-site form cannot; see tests/test_security.py)."""
    with httpx.Client(base_url=server, timeout=120, headers={"X-Requested-With": "spanrag-tests"}) as c:
        yield c


@pytest.fixture(scope="module")
def corpus(client):
    """Collection ``docs``: three sample files uploaded as multipart, one JSON document."""
    reports = {}
    for name, doc_id in SAMPLE_IDS.items():
        with open(SAMPLES / name, "rb") as f:
            r = client.post(
                f"/v1/collections/{C}/documents",
                files={"file": (name, f, "application/octet-stream")},
                data={"doc_id": doc_id},
            )
        assert r.status_code == 201, r.text
        reports[name] = r.json()
    r = client.post(f"/v1/collections/{C}/documents", json=JUPITER)
    assert r.status_code == 201, r.text
    reports["jupiter"] = r.json()
    return reports


def doc_url(doc_id: str, collection: str = C) -> str:
    return f"/v1/collections/{collection}/documents/{doc_id}"


# -- service basics --------------------------------------------------------------------------


def test_healthz_is_ok(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {
        "/v1/collections/{collection}/query",
        "/v1/collections/{collection}/retrieve",
        "/v1/collections/{collection}/documents",
        "/healthz",
    } <= set(paths)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# -- documents -------------------------------------------------------------------------------


def test_multipart_upload_ingests_a_sample_file(corpus):
    report = corpus["solar-system.html"]
    assert report["added"] == 1 and report["spans"] > 0 and report["failed"] == []
    assert report["doc_ids"] == ["samples/solar-system.html"]


def test_json_document_is_added_and_readable_back(client, corpus):
    assert corpus["jupiter"]["added"] == 1 and corpus["jupiter"]["doc_ids"] == [JUPITER["id"]]
    r = client.get(doc_url(JUPITER["id"]))
    assert r.status_code == 200
    doc = r.json()
    assert doc["id"] == JUPITER["id"] and doc["title"] == "Jupiter"
    assert doc["text"] == JUPITER["text"] and doc["metadata"] == JUPITER["metadata"]
    assert doc["n_spans"] > 0


def test_reposting_an_unchanged_document_does_nothing(client, corpus):
    r = client.post(f"/v1/collections/{C}/documents", json=JUPITER)
    assert r.status_code == 201
    assert (r.json()["added"], r.json()["updated"], r.json()["unchanged"]) == (0, 0, 1)


def test_reposting_a_changed_document_replaces_it(client, corpus):
    doc = {"id": "notes/replace-me", "text": "Ceres is a dwarf planet in the asteroid belt."}
    assert client.post(f"/v1/collections/{C}/documents", json=doc).json()["added"] == 1
    doc["text"] = "Pluto is a dwarf planet in the Kuiper belt."
    r = client.post(f"/v1/collections/{C}/documents", json=doc)
    assert r.json()["updated"] == 1
    assert client.get(doc_url(doc["id"])).json()["text"] == doc["text"]


def test_a_json_document_can_be_parsed_as_markdown(client, corpus):
    doc = {
        "id": "notes/moons.md",
        "format": "markdown",
        "text": "# Moons of Jupiter\n\n## Io\n\nIo is the most volcanic body in the Solar System.\n",
    }
    assert client.post(f"/v1/collections/{C}/documents", json=doc).status_code == 201
    spans = client.post(f"/v1/collections/{C}/retrieve", json={"question": "Which moon is the most volcanic?"}).json()[
        "spans"
    ]
    io = [s for s in spans if s["doc_id"] == doc["id"]]
    assert io and io[0]["heading_path"] == ["Moons of Jupiter", "Io"]


def test_an_unknown_json_document_format_is_422(client, corpus):
    r = client.post(f"/v1/collections/{C}/documents", json={"id": "x", "text": "Hi.", "format": "docx"})
    assert r.status_code == 422


def test_get_document_with_slashes_in_its_id(client, corpus):
    r = client.get(doc_url("samples/coffee-prices.csv"))
    assert r.status_code == 200
    assert r.json()["id"] == "samples/coffee-prices.csv" and "Kenya" in r.json()["text"]


def test_delete_document_with_slashes_in_its_id_removes_it(client, corpus):
    doc = {"id": "tmp/a b/c.md", "text": "Europa is an icy moon of Jupiter with a hidden ocean."}
    assert client.post(f"/v1/collections/{C}/documents", json=doc).status_code == 201
    assert client.get(doc_url(doc["id"])).status_code == 200
    r = client.delete(doc_url(doc["id"]))
    assert r.status_code == 200 and r.json() == {"deleted": doc["id"]}
    assert client.get(doc_url(doc["id"])).status_code == 404
    assert client.delete(doc_url(doc["id"])).status_code == 404
    hits = client.post(f"/v1/collections/{C}/retrieve", json={"question": "icy moon with a hidden ocean"}).json()[
        "spans"
    ]
    assert all(s["doc_id"] != doc["id"] for s in hits)


def test_absolute_path_doc_ids_are_reachable(client, corpus):
    # `spanrag ingest` of files outside the working directory gives ids like /home/u/x.md
    doc = {"id": "/abs/path/notes.md", "text": "Titan has lakes of liquid methane."}
    assert client.post(f"/v1/collections/{C}/documents", json=doc).status_code == 201
    r = client.get(doc_url(doc["id"]))
    assert r.status_code == 200 and r.json()["id"] == doc["id"]
    assert client.delete(doc_url(doc["id"])).status_code == 200


def test_multipart_upload_without_doc_id_uses_the_file_name(client, corpus):
    with open(SAMPLES / "spanrag-guide.md", "rb") as f:
        r = client.post(f"/v1/collections/{C}/documents", files={"file": ("spanrag-guide.md", f)})
    assert r.status_code == 201, r.text
    (doc_id,) = r.json()["doc_ids"]
    assert "spanrag-guide" in doc_id
    assert client.get(doc_url(doc_id)).status_code == 200


def test_collections_are_listed_with_their_sizes(client, corpus):
    r = client.get("/v1/collections")
    assert r.status_code == 200
    stats = {c["name"]: c for c in r.json()["collections"]}
    assert stats[C]["documents"] >= 4 and stats[C]["spans"] > 0
    freshness = stats[C]["freshness"]  # the segments searched: how far behind the writes they are
    assert {"segments", "pending_deltas", "delta_spans", "tombstones", "last_merge_age_s", "merging"} <= set(freshness)
    assert freshness["segments"] >= 1


# -- query and retrieve ----------------------------------------------------------------------


def test_query_returns_an_answer_with_citations_in_the_documented_shape(client, corpus):
    r = client.post(f"/v1/collections/{C}/query", json={"question": MERCURY})
    assert r.status_code == 200
    out = r.json()
    assert {"answer", "citations", "context", "usage", "timings_ms"} <= set(out)
    assert isinstance(out["answer"], str) and "88 days" in out["answer"] and "[1]" in out["answer"]
    assert out["citations"]
    for n, c in enumerate(out["citations"], start=1):
        assert set(c) == CITATION_KEYS
        assert c["id"] == n and f"[{n}]" in out["answer"]
        assert isinstance(c["span_id"], str) and isinstance(c["doc_id"], str) and isinstance(c["text"], str)
        assert isinstance(c["start"], int) and isinstance(c["end"], int) and c["start"] < c["end"]
        assert isinstance(c["heading_path"], list) and all(isinstance(h, str) for h in c["heading_path"])
    assert out["citations"][0]["doc_id"] == "samples/solar-system.html"
    assert out["context"]
    for item in out["context"]:
        assert CONTEXT_KEYS <= set(item)
        assert isinstance(item["score"], float) and item["text"]
        assert item["granularity"] in {"document", "section", "paragraph", "sentence", "table", "row"}
    assert isinstance(out["usage"]["context_tokens"], int) and out["usage"]["context_tokens"] > 0
    assert all(isinstance(v, (int, float)) for v in out["timings_ms"].values())
    assert "total_ms" in out["timings_ms"]


def test_citation_offsets_point_into_the_stored_document(client, corpus):
    out = client.post(f"/v1/collections/{C}/query", json={"question": MERCURY}).json()
    for c in out["citations"]:
        text = client.get(doc_url(c["doc_id"])).json()["text"]
        assert text[c["start"] : c["end"]] in c["text"]


def test_query_respects_top_k_and_budget(client, corpus):
    out = client.post(f"/v1/collections/{C}/query", json={"question": MERCURY, "top_k": 2, "budget_tokens": 60}).json()
    assert 1 <= len(out["context"]) <= 2
    assert out["usage"]["context_tokens"] <= 60


def test_a_query_can_ask_for_compression_and_is_told_what_it_did(client, corpus):
    full = client.post(f"/v1/collections/{C}/query", json={"question": MERCURY}).json()
    assert full["usage"]["compression"] is None  # the default pipeline has no compression stage
    out = client.post(
        f"/v1/collections/{C}/query",
        json={"question": MERCURY, "compression": "sentence", "compress_budget_tokens": 40},
    ).json()
    report = out["usage"]["compression"]
    assert report["method"] == "sentence" and report["target_tokens"] == 40
    assert report["tokens_before"] == full["usage"]["context_tokens"]
    assert report["applied"] == (report["tokens_before"] > 40)
    assert out["usage"]["context_tokens"] == report["tokens_after"] <= 40
    assert {c["span_id"] for c in out["citations"]} <= {c["span_id"] for c in out["context"]}


def test_retrieve_returns_ranked_spans_without_an_answer(client, corpus):
    r = client.post(f"/v1/collections/{C}/retrieve", json={"question": MERCURY, "top_k": 4})
    assert r.status_code == 200
    out = r.json()
    assert "answer" not in out and "citations" not in out
    spans = out["spans"]
    assert 1 <= len(spans) <= 4
    assert all(CONTEXT_KEYS <= set(s) for s in spans)
    scores = [s["score"] for s in spans]
    assert scores == sorted(scores, reverse=True)
    assert any("Mercury" in s["text"] for s in spans)
    assert out["usage"]["context_tokens"] > 0


def test_query_can_name_a_pipeline(client, corpus):
    out = client.post(f"/v1/collections/{C}/query", json={"question": MERCURY, "pipeline": "bm25"}).json()
    assert out["pipeline"] == "bm25"


def test_unknown_pipeline_is_400(client, corpus):
    r = client.post(f"/v1/collections/{C}/query", json={"question": MERCURY, "pipeline": "nope"})
    assert r.status_code == 400 and "unknown pipeline" in r.json()["detail"]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/v1/collections/ghost/query", {"question": "anything?"}),
        ("POST", "/v1/collections/ghost/retrieve", {"question": "anything?"}),
        ("GET", "/v1/collections/ghost/documents/samples/tea-notes.txt", None),
        ("DELETE", "/v1/collections/ghost/documents/samples/tea-notes.txt", None),
    ],
    ids=["query", "retrieve", "get-document", "delete-document"],
)
def test_unknown_collection_is_404(client, method, path, body):
    r = client.request(method, path, json=body)
    assert r.status_code == 404
    assert "ghost" in r.json()["detail"] and "not found" in r.json()["detail"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_document_is_404(client, corpus, method):
    r = client.request(method, doc_url("samples/no-such-file.md"))
    assert r.status_code == 404 and "no-such-file" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"question": ""},
        {},
        {"question": 42},
        {"question": MERCURY, "top_k": 0},
        {"question": MERCURY, "top_k": -3},
        {"question": MERCURY, "top_k": 10_000},
        {"question": MERCURY, "top_k": "many"},
        {"question": MERCURY, "budget_tokens": 0},
        {"question": MERCURY, "compress_ratio": 1.5},
        {"question": MERCURY, "compression": "zip"},
    ],
    ids=[
        "empty-question",
        "no-question",
        "non-string",
        "top_k-0",
        "top_k-negative",
        "top_k-huge",
        "top_k-string",
        "budget-0",
        "ratio-above-1",
        "unknown-compression",
    ],
)
@pytest.mark.parametrize("endpoint", ["query", "retrieve"])
def test_invalid_query_is_422_with_a_reason(client, corpus, endpoint, body):
    r = client.post(f"/v1/collections/{C}/{endpoint}", json=body)
    assert r.status_code == 422
    assert r.json()["detail"]


def test_a_blank_question_is_422(client, corpus):
    r = client.post(f"/v1/collections/{C}/query", json={"question": "   \n "})
    assert r.status_code == 422


@pytest.mark.parametrize("endpoint", ["query", "retrieve", "documents"])
def test_malformed_json_is_422(client, corpus, endpoint):
    r = client.post(
        f"/v1/collections/{C}/{endpoint}", content=b'{"question": "oops"', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"text": "no id"},
        {"id": "x"},
        {"id": "", "text": "empty id"},
        {"id": "x", "text": ""},
        {"id": "x", "text": "   \n  "},
        {"id": "x", "text": "ok", "metadata": "not a dict"},
        ["not", "an", "object"],
    ],
    ids=["no-id", "no-text", "empty-id", "empty-text", "blank-text", "bad-metadata", "array"],
)
def test_invalid_json_document_is_422(client, corpus, body):
    r = client.post(f"/v1/collections/{C}/documents", json=body)
    assert r.status_code == 422 and r.json()["detail"]


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("junk.txt", random.Random(1).randbytes(2048), "binary"),
        ("empty.md", b"", "empty"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", "PDF"),
        ("undecodable.txt", bytes(range(128, 256)) * 4, "UTF-8"),
        ("slides.pptx", b"PK\x03\x04 zip bytes", "unsupported"),
    ],
)
def test_a_bad_upload_is_422_with_its_reason(client, corpus, name, data, reason):
    r = client.post(f"/v1/collections/{C}/documents", files={"file": (name, data)}, data={"doc_id": f"bad/{name}"})
    assert r.status_code == 422
    assert reason in r.json()["detail"]
    assert client.get(doc_url(f"bad/{name}")).status_code == 404


def test_multipart_without_a_file_field_is_422(client, corpus):
    r = client.post(f"/v1/collections/{C}/documents", files={"upload": ("a.txt", b"hello")})
    assert r.status_code == 422 and "file" in r.json()["detail"]


def test_wrong_content_type_is_415(client, corpus):
    r = client.post(f"/v1/collections/{C}/documents", content=b"just some text", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["detail"]


def test_invalid_collection_name_is_422(client):
    r = client.post("/v1/collections/bad name!/documents", json={"id": "a", "text": "Some text."})
    assert r.status_code == 422 and "collection" in r.json()["detail"]
