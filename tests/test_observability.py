"""Observability of the HTTP app (``app.observability``): ``/metrics`` in the Prometheus
format, request ids, and JSON access logs, in-process through ``TestClient``.

Most tests use a service whose model is never loaded (health checks, 404s, the scrape
itself must not need it); those that ingest and query use the session's model
(``make_rag``)."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from app.api import create_app
from app.observability import JsonLogFormatter, configure_logging, current_request_id
from service.engine import RagService
from service.settings import Settings

C = "notes"
DOC_URL = f"/v1/collections/{C}/documents"
QUERY_ROUTE = "/v1/collections/{collection}/query"
DOCUMENT_ROUTE = "/v1/collections/{collection}/documents/{doc_id}"
MERCURY = {
    "id": "planets/mercury",
    "title": "Mercury",
    "text": "Mercury is the closest planet to the Sun. It takes 88 days to orbit the Sun. "
    "A day on Mercury lasts 59 Earth days.",
}
HEX_ID = re.compile(r"[0-9a-f]{32}")


# -- helpers -----------------------------------------------------------------------------------


def scrape(client: TestClient) -> list:
    """Every sample of ``/metrics``, parsed by prometheus_client's own parser."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST  # Prometheus text format
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def value(samples: list, name: str, **labels: str) -> float | None:
    """The sum of the samples called ``name`` whose labels include ``labels``; None if none."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    return sum(found) if found else None


def requests_counted(samples: list, route: str, status: int, method: str = "GET") -> float | None:
    return value(samples, "spanrag_http_requests_total", method=method, route=route, status=str(status))


def bare_service(tmp_path) -> RagService:
    """A service whose model is never loaded: it must not be, to answer what these tests ask."""
    return RagService(Settings(data_dir=tmp_path / "data", allowed_hosts=["testserver"]))


# The clients below are not entered (``with TestClient(app)``): the app's start-up would warm
# the service up in the background, and these tests need it cold (or already set up).


@pytest.fixture
def bare(tmp_path) -> Iterator[tuple[FastAPI, RagService, TestClient]]:
    rag = bare_service(tmp_path)
    app = create_app(service=rag)
    yield app, rag, TestClient(app, raise_server_exceptions=False)
    rag.close()


@pytest.fixture
def client(bare) -> TestClient:
    return bare[2]


@pytest.fixture
def served(make_rag, tmp_path) -> Iterator[TestClient]:
    """The app over a service with the session's model, one document in collection ``notes``."""
    test_client = TestClient(create_app(service=make_rag(tmp_path / "data", allowed_hosts=["testserver"])))
    response = test_client.post(DOC_URL, json=MERCURY)
    assert response.status_code == 201, response.text
    yield test_client


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the ``spanrag`` loggers write while the test runs, as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("spanrag")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def log_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


# -- /metrics ----------------------------------------------------------------------------------


def test_metrics_is_prometheus_text_and_scraping_it_loads_nothing(bare):
    _, rag, client = bare
    samples = scrape(client)

    names = {s.name for s in samples}
    # counters with label sets are exported at 0 from the start
    assert {
        "spanrag_ingest_documents_total",
        "spanrag_ingest_spans_total",
        "spanrag_documents_deleted_total",
        "spanrag_ingest_spans_per_second",
    } <= names
    for outcome in ("added", "updated", "unchanged", "removed", "failed"):
        assert value(samples, "spanrag_ingest_documents_total", outcome=outcome) == 0
    # neither the model nor the store is opened by a scrape (create_app builds only the generator)
    assert not {"store", "encoder", "token_encoder", "retriever", "graph"} & set(rag.__dict__)
    assert not any(s.name.startswith("spanrag_index_") for s in samples)


def test_requests_are_counted_by_route_template_and_status(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/no/such/path/secret-doc").status_code == 404
    assert client.get("/v1/collections/missing-coll/documents/a/b").status_code == 404
    assert client.delete("/healthz").status_code == 405
    samples = scrape(client)

    assert requests_counted(samples, "/healthz", 200) == 1
    assert requests_counted(samples, "other", 404) == 1
    assert requests_counted(samples, DOCUMENT_ROUTE, 404) == 1
    assert requests_counted(samples, "/healthz", 405, method="DELETE") == 1
    assert value(samples, "spanrag_errors_total", route="other", status="404") == 1
    assert value(samples, "spanrag_errors_total", route=DOCUMENT_ROUTE, status="404") == 1
    assert value(samples, "spanrag_errors_total", route="/healthz", status="200") is None
    assert value(samples, "spanrag_http_request_duration_seconds_count", method="GET", route="/healthz") == 1
    # raw paths, collection names and document ids never become label values
    labels = {v for s in samples if s.name.startswith(("spanrag_http_", "spanrag_errors")) for v in s.labels.values()}
    assert not any("missing-coll" in v or "secret-doc" in v or v.startswith("/no/") for v in labels)


def test_ingest_moves_the_ingest_counters_and_the_index_sizes(served):
    samples = scrape(served)
    assert value(samples, "spanrag_ingest_documents_total", outcome="added") == 1
    spans = value(samples, "spanrag_ingest_spans_total")
    assert spans and spans > 0
    assert value(samples, "spanrag_ingest_duration_seconds_count") == 1
    assert value(samples, "spanrag_ingest_spans_per_second") > 0
    assert value(samples, "spanrag_index_documents", collection=C) == 1
    assert value(samples, "spanrag_index_spans", collection=C) == spans

    assert served.post(DOC_URL, json=MERCURY).json()["unchanged"] == 1
    assert served.delete(f"{DOC_URL}/{MERCURY['id']}").status_code == 200
    samples = scrape(served)
    assert value(samples, "spanrag_ingest_documents_total", outcome="unchanged") == 1
    assert value(samples, "spanrag_ingest_documents_total", outcome="added") == 1
    assert value(samples, "spanrag_documents_deleted_total") == 1
    assert value(samples, "spanrag_index_documents", collection=C) == 0


def test_a_query_feeds_the_retrieval_stage_histogram(served):
    assert value(scrape(served), "spanrag_stage_duration_seconds_count") is None

    response = served.post(f"/v1/collections/{C}/query", json={"question": "How long is a year on Mercury?"})
    assert response.status_code == 200, response.text
    samples = scrape(served)

    for stage in ("encode", "first_stage", "selection", "retrieval"):
        assert value(samples, "spanrag_stage_duration_seconds_count", stage=stage) == 1, stage
    assert value(samples, "spanrag_stage_duration_seconds_sum", stage="retrieval") > 0
    assert value(samples, "spanrag_retrievals_total") == 1
    assert requests_counted(samples, QUERY_ROUTE, 200, method="POST") == 1


def test_a_streamed_query_is_counted_once_finished_and_carries_its_request_id(served):
    with served.stream(
        "POST",
        f"/v1/collections/{C}/query",
        json={"question": "How long is a day on Mercury?", "stream": True},
        headers={"X-Request-ID": "stream-1"},
    ) as response:
        body = "".join(response.iter_text())
    assert response.status_code == 200 and response.headers["x-request-id"] == "stream-1"
    assert "event: done" in body
    samples = scrape(served)
    assert requests_counted(samples, QUERY_ROUTE, 200, method="POST") == 1
    assert value(samples, "spanrag_stage_duration_seconds_count", stage="retrieval") == 1


def test_a_stream_is_timed_to_its_last_chunk_with_the_status_it_started_with(bare, json_log):
    app, _, client = bare

    def slow() -> Iterator[bytes]:
        yield b"first "
        time.sleep(0.3)
        yield b"last"

    app.add_api_route("/test/slow", lambda: StreamingResponse(slow(), status_code=206))
    response = client.get("/test/slow")
    assert response.status_code == 206 and response.text == "first last"
    assert HEX_ID.fullmatch(response.headers["x-request-id"])
    samples = scrape(client)

    assert requests_counted(samples, "/test/slow", 206) == 1
    assert value(samples, "spanrag_http_request_duration_seconds_sum", route="/test/slow") >= 0.3
    access = [line for line in log_lines(json_log) if line.get("route") == "/test/slow"]
    assert len(access) == 1 and access[0]["status"] == 206 and access[0]["duration_ms"] >= 300


def test_an_unhandled_error_is_a_500_with_its_request_id_and_is_counted(bare):
    app, _, client = bare

    def boom() -> dict:
        raise RuntimeError("bug")

    app.add_api_route("/test/boom", boom)
    response = client.get("/test/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "boom-1"
    samples = scrape(client)
    assert requests_counted(samples, "/test/boom", 500) == 1
    assert value(samples, "spanrag_errors_total", route="/test/boom", status="500") == 1


def test_two_apps_in_one_process_keep_their_own_metrics(tmp_path):
    first_rag, second_rag = bare_service(tmp_path / "one"), bare_service(tmp_path / "two")
    first, second = create_app(service=first_rag), create_app(service=second_rag)  # no "Duplicated timeseries"
    again = create_app(service=first_rag)  # a second app over the same service, too
    a, b, c = TestClient(first), TestClient(second), TestClient(again)
    a.get("/healthz")
    a.get("/healthz")
    b.get("/healthz")
    assert requests_counted(scrape(a), "/healthz", 200) == 2
    assert requests_counted(scrape(b), "/healthz", 200) == 1
    assert requests_counted(scrape(c), "/healthz", 200) is None
    first_rag.close()
    second_rag.close()


def test_metrics_need_an_admin_key_for_every_collection_once_keys_exist(bare):
    from app.keys import KeyStore

    _, rag, client = bare
    keys = KeyStore(rag.settings.data_dir)
    admin, collection_admin = keys.create("*", "admin").secret, keys.create(C, "admin").secret

    anonymous = client.get("/metrics", headers={"X-Request-ID": "scrape-1"})
    assert anonymous.status_code == 401 and anonymous.headers["x-request-id"] == "scrape-1"
    assert client.get("/metrics", headers={"Authorization": f"Bearer {collection_admin}"}).status_code == 403
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert allowed.status_code == 200
    samples = [s for f in text_string_to_metric_families(allowed.text) for s in f.samples]
    assert requests_counted(samples, "/metrics", 401) == 1 and requests_counted(samples, "/metrics", 403) == 1


def test_refusals_by_the_outer_middleware_are_counted_with_their_id(client):
    refused = client.get("/healthz", headers={"Host": "rebound.example", "X-Request-ID": "host-1"})
    assert refused.status_code == 400 and refused.headers["x-request-id"] == "host-1"
    assert requests_counted(scrape(client), "/healthz", 400) == 1


# -- request ids --------------------------------------------------------------------------------


def test_a_safe_request_id_is_echoed_and_seen_by_the_endpoint(bare):
    app, _, client = bare

    def whoami(request: Request) -> dict:
        return {"state": request.state.request_id, "context": current_request_id()}

    app.add_api_route("/test/whoami", whoami)
    given = "Req-42.retry_1"
    response = client.get("/test/whoami", headers={"X-Request-ID": given})
    assert response.headers["x-request-id"] == given
    assert response.json() == {"state": given, "context": given}
    assert current_request_id() is None  # the id does not outlive its request


def test_a_request_id_is_made_when_absent_and_on_error_responses(client):
    first, second = client.get("/healthz"), client.get("/no/such/path")
    assert second.status_code == 404
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(HEX_ID.fullmatch(i) for i in ids) and ids[0] != ids[1]
    assert HEX_ID.fullmatch(client.post(f"/v1/collections/{C}/query", json={}).headers["x-request-id"])


@pytest.mark.parametrize(
    "hostile", ["a" * 65, "../../etc/passwd;rm", "<script>alert(1)</script>", "id with spaces", ""]
)
def test_an_unsafe_request_id_is_replaced(client, hostile):
    response = client.get("/healthz", headers={"X-Request-ID": hostile})
    assert HEX_ID.fullmatch(response.headers["x-request-id"])
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]


# -- logs ---------------------------------------------------------------------------------------


def test_one_json_access_line_per_request_without_secrets(client, json_log):
    response = client.post(
        "/v1/collections/missing-coll/query?api_key=secret-in-query",
        json={"question": "secret-in-body: what is the launch code?"},
        headers={"Authorization": "Bearer secret-xyz", "X-Request-ID": "req-7"},
    )
    assert response.status_code == 404
    lines = [line for line in log_lines(json_log) if line["logger"] == "spanrag.access"]

    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-7" and line["level"] == "INFO"
    assert line["method"] == "POST" and line["route"] == QUERY_ROUTE and line["status"] == 404
    assert line["path"] == "/v1/collections/missing-coll/query"
    assert line["client"] == "testclient"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["time"] and line["message"]
    text = json_log.getvalue()
    for secret in ("secret-xyz", "Bearer", "secret-in-query", "api_key", "secret-in-body", "launch code"):
        assert secret not in text, secret


def test_log_lines_written_during_a_request_carry_its_id(bare, json_log):
    app, _, client = bare

    def chatty() -> dict:
        logging.getLogger("spanrag.test").info("inside the endpoint")
        return {}

    app.add_api_route("/test/chatty", chatty)
    client.get("/test/chatty", headers={"X-Request-ID": "req-8"})
    logging.getLogger("spanrag.test").info("outside any request")
    lines = {line["message"]: line for line in log_lines(json_log)}

    assert lines["inside the endpoint"]["request_id"] == "req-8"
    assert lines["inside the endpoint"]["logger"] == "spanrag.test"
    assert lines["outside any request"]["request_id"] is None


def test_the_json_formatter_writes_one_object_per_line_with_the_traceback():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.getLogger("spanrag.test").makeRecord(
            "spanrag.test",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("twice",),
            __import__("sys").exc_info(),
            extra={"status": 500, "color_message": "\x1b[31mfailed\x1b[0m"},
        )
    text = JsonLogFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "failed twice" and line["level"] == "ERROR" and line["status"] == 500
    assert "ValueError" in line["exception"] and line["request_id"] is None
    assert "color_message" not in line  # uvicorn's terminal-coloured duplicate of the message


def test_configure_logging_installs_one_root_handler_and_importing_installs_none():
    root = logging.getLogger()
    assert not any(getattr(h, "_spanrag_observability", False) for h in root.handlers)  # app.api is imported
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        configure_logging(json_logs=True, level="INFO", stream=io.StringIO())
        handler = configure_logging(json_logs=True, level="INFO", stream=stream)  # replaces, not adds
        ours = [h for h in root.handlers if getattr(h, "_spanrag_observability", False)]
        assert ours == [handler] and root.level == logging.INFO
        logging.getLogger("spanrag.test").info("hello %s", "world")
        assert json.loads(stream.getvalue().splitlines()[-1])["message"] == "hello world"

        plain = io.StringIO()
        configure_logging(json_logs=False, level="WARNING", stream=plain)
        logging.getLogger("spanrag.test").warning("plain")
        assert plain.getvalue().rstrip().endswith("spanrag.test [-] plain")
    finally:
        for h in list(root.handlers):
            if h not in saved_handlers:
                root.removeHandler(h)
        root.setLevel(saved_level)
