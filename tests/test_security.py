"""Exposing the service: API keys and tenants, browser safety, limits on every input, no 5xx
from hostile input, provenance of file-ingested documents, and secrets kept out of answers.

Access and hostile input run against real ``uvicorn`` processes on loopback; settings
variants (CORS, rate limits, readiness) run in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.keys import KEY_PREFIX, KeyStore
from app.server_process import SpanragServer, free_port

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ALPHA_TEXT = "The alpha team keeps its bicycles in the blue shed behind the library."
BETA_SECRET = "zebraquartz"
BETA_TEXT = f"The beta project codename is {BETA_SECRET}; its launch is planned for the spring."


# -- a server with keys --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A server with keys, two tenants (alpha, beta) and one document in each."""
    root = tmp_path_factory.mktemp("keyed")
    data = root / "data"
    store = KeyStore(data)
    keys = {
        "admin": store.create("*", "admin").secret,
        "alpha_read": store.create("alpha", "read").secret,
        "alpha_write": store.create("alpha", "write").secret,
        "alpha_admin": store.create("alpha", "admin").secret,
        "beta_write": store.create("beta", "write").secret,
    }
    revoked = store.create("alpha", "read")
    store.revoke(revoked.key.key_id)
    keys["revoked"] = revoked.secret
    store.close()
    with SpanragServer(data, cwd=root) as server:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            for collection, key, text in (
                ("alpha", keys["alpha_write"], ALPHA_TEXT),
                ("beta", keys["beta_write"], BETA_TEXT),
            ):
                r = http.post(
                    f"/v1/collections/{collection}/documents",
                    headers=bearer(key),
                    json={"id": f"{collection}-notes", "text": text},
                )
                assert r.status_code == 201, r.text
            yield server, keys, http


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ENDPOINTS = [  # (method, path, body, scope needed)
    ("GET", "/v1/collections", None, None),
    ("GET", "/v1/models", None, None),
    ("POST", "/v1/collections/alpha/query", {"question": "Where are the bicycles kept?"}, "read"),
    ("POST", "/v1/collections/alpha/retrieve", {"question": "Where are the bicycles kept?"}, "read"),
    ("GET", "/v1/collections/alpha/documents/alpha-notes", None, "read"),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "spanrag:alpha", "messages": [{"role": "user", "content": "Where are the bicycles?"}]},
        "read",
    ),
    ("POST", "/v1/collections/alpha/documents", {"id": "alpha-extra", "text": "Extra alpha note."}, "write"),
    ("DELETE", "/v1/collections/alpha/documents/alpha-extra", None, "write"),
]


@pytest.mark.parametrize("method,path,body,scope", ENDPOINTS)
def test_every_endpoint_needs_a_valid_key(keyed, method, path, body, scope):
    _, keys, http = keyed
    for headers in (
        {},
        bearer("sk-spanrag-000000000000-not-a-key"),
        bearer(keys["revoked"]),
        {"Authorization": "Basic x"},
    ):
        r = http.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method,path,body,scope", ENDPOINTS)
def test_each_scope_allows_what_it_names_and_no_more(keyed, method, path, body, scope):
    _, keys, http = keyed
    expected = {  # role -> allowed?
        "alpha_read": scope in (None, "read"),
        "alpha_write": True,
        "alpha_admin": True,
    }
    for role, allowed in expected.items():
        r = http.request(method, path, json=body, headers=bearer(keys[role]))
        if allowed:
            # the second DELETE of the same document finds it gone: 404 is the document's
            assert r.status_code in ((200, 201, 404) if method == "DELETE" else (200, 201)), (role, r.text)
        else:
            assert r.status_code == 403, (role, r.text)


def test_a_collection_the_key_may_not_see_is_not_found_like_a_missing_one(keyed):
    _, keys, http = keyed
    alpha = bearer(keys["alpha_admin"])
    for name in ("beta", "no-such-collection"):
        assert (
            http.post(f"/v1/collections/{name}/query", headers=alpha, json={"question": "codename?"}).status_code == 404
        )
        assert http.get(f"/v1/collections/{name}/documents/beta-notes", headers=alpha).status_code == 404
        assert http.delete(f"/v1/collections/{name}/documents/beta-notes", headers=alpha).status_code == 404
        assert (
            http.post(
                f"/v1/collections/{name}/documents", headers=alpha, json={"id": "x", "text": "overwrite attempt"}
            ).status_code
            == 404
        )
        assert http.delete(f"/v1/collections/{name}", headers=alpha).status_code == 404
    missing = http.post("/v1/collections/no-such-collection/query", headers=alpha, json={"question": "q"}).json()
    hidden = http.post("/v1/collections/beta/query", headers=alpha, json={"question": "q"}).json()
    assert missing["detail"].replace("no-such-collection", "X") == hidden["detail"].replace("beta", "X")


def test_no_response_to_another_tenant_carries_its_content(keyed):
    _, keys, http = keyed
    alpha = bearer(keys["alpha_read"])
    responses = [
        http.get("/v1/collections", headers=alpha),
        http.get("/v1/models", headers=alpha),
        http.post("/v1/collections/alpha/query", headers=alpha, json={"question": "What is the beta codename?"}),
        http.post("/v1/collections/alpha/retrieve", headers=alpha, json={"question": "beta project codename launch"}),
        http.post(
            "/v1/chat/completions",
            headers=alpha,
            json={"model": "spanrag:beta", "messages": [{"role": "user", "content": "codename?"}]},
        ),
        http.post(
            "/v1/chat/completions",
            headers=alpha,
            json={"model": "spanrag:alpha", "messages": [{"role": "user", "content": "What is the beta codename?"}]},
        ),
    ]
    for r in responses:
        assert BETA_SECRET not in r.text and "beta-notes" not in r.text
    assert [c["name"] for c in responses[0].json()["collections"]] == ["alpha"]
    assert [m["id"] for m in responses[1].json()["data"]] == ["spanrag:alpha"]
    beta_view = http.post(
        "/v1/collections/beta/query",
        headers=bearer(keys["beta_write"]),
        json={"question": "What is the beta codename?"},
    )
    assert BETA_SECRET in beta_view.text  # the same question finds it where the key may look


def test_the_openai_client_works_with_a_key(keyed):
    import openai

    server, keys, _ = keyed
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=keys["alpha_read"], max_retries=0)
    assert [m.id for m in client.models.list()] == ["spanrag:alpha"]
    reply = client.chat.completions.create(
        model="spanrag:alpha", messages=[{"role": "user", "content": "Where are the bicycles kept?"}]
    )
    assert "shed" in reply.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="spanrag:beta", messages=[{"role": "user", "content": "codename?"}])
    anonymous = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()


def test_metrics_need_an_admin_key_for_every_collection(keyed):
    _, keys, http = keyed
    assert http.get("/metrics").status_code == 401
    assert http.get("/metrics", headers=bearer(keys["alpha_admin"])).status_code == 403
    r = http.get("/metrics", headers=bearer(keys["admin"]))
    assert r.status_code == 200 and "spanrag_http_requests_total" in r.text


def test_health_and_readiness_need_no_key(keyed):
    _, _, http = keyed
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}


def test_revoking_a_key_takes_effect_on_the_next_request(keyed):
    server, _, http = keyed
    store = KeyStore(server.data_dir)
    made = store.create("alpha", "read")
    assert http.get("/v1/collections", headers=bearer(made.secret)).status_code == 200
    store.revoke(made.key.key_id)
    assert http.get("/v1/collections", headers=bearer(made.secret)).status_code == 401
    store.close()


def test_only_admin_deletes_a_collection_and_it_is_gone_everywhere(keyed):
    server, keys, http = keyed
    store = KeyStore(server.data_dir)
    gamma_write, gamma_admin = store.create("gamma", "write").secret, store.create("gamma", "admin").secret
    store.close()
    r = http.post(
        "/v1/collections/gamma/documents",
        headers=bearer(gamma_write),
        json={"id": "g", "text": "Gamma rays are the most energetic light."},
    )
    assert r.status_code == 201
    assert http.delete("/v1/collections/gamma", headers=bearer(gamma_write)).status_code == 403
    assert http.delete("/v1/collections/gamma", headers=bearer(gamma_admin)).json() == {"deleted": "gamma"}
    listed = http.get("/v1/collections", headers=bearer(keys["admin"])).json()["collections"]
    assert "gamma" not in [c["name"] for c in listed]
    assert (
        http.post(
            "/v1/collections/gamma/query",
            headers=bearer(gamma_admin),
            json={"question": "Which light is most energetic?"},
        ).status_code
        == 404
    )


def test_keys_are_stored_hashed_in_a_private_file(keyed):
    server, keys, _ = keyed
    assert oct((server.data_dir / KeyStore.FILE_NAME).stat().st_mode & 0o777) == "0o600"
    raw = (server.data_dir / KeyStore.FILE_NAME).read_bytes()
    for key in keys.values():
        assert key.encode() not in raw
        random_part = key[len(KEY_PREFIX) :].split("-", 1)[1]
        assert len(random_part) >= 40
        assert random_part.encode() not in raw


def test_no_key_appears_in_the_server_log(keyed):
    server, keys, _ = keyed
    log = server.output(tail_chars=10_000_000)
    assert log  # the server did log its requests
    for key in keys.values():
        assert key not in log


# -- the keys CLI and serve ------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_keys_cli_creates_lists_and_revokes(tmp_path):
    data = str(tmp_path / "data")
    made = run_cli(
        "keys", "create", "--collection", "docs", "--scope", "write", "--name", "ci", "--data-dir", data, cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("sk-spanrag-")
    listed = run_cli("keys", "list", "--data-dir", data, cwd=tmp_path)
    assert listed.returncode == 0 and "docs" in listed.stdout and "write" in listed.stdout
    assert secret not in listed.stdout
    assert KeyStore(Path(data)).authenticate(secret).scope == "write"
    revoked = run_cli("keys", "revoke", secret.split("-")[2], "--data-dir", data, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert KeyStore(Path(data)).authenticate(secret) is None
    bad = run_cli("keys", "create", "--collection", "docs", "--scope", "owner", "--data-dir", data, cwd=tmp_path)
    assert bad.returncode == 1 and "scope" in bad.stderr


def test_keys_create_if_none_writes_one_key_file_for_containers(tmp_path):
    data, out = tmp_path / "data", tmp_path / "data" / "admin.key"
    args = (
        "keys",
        "create",
        "--collection",
        "*",
        "--scope",
        "admin",
        "--if-none",
        "--out",
        str(out),
        "--data-dir",
        str(data),
    )
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    first = out.read_text().strip()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    assert out.read_text().strip() == first and len(KeyStore(data).list()) == 1


def test_collections_delete_removes_one_collection(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nThe red kite nests in tall oaks.\n")
    data = str(tmp_path / "data")
    for name in ("keep", "drop"):
        assert run_cli("ingest", "notes", "--collection", name, "--data-dir", data, cwd=tmp_path).returncode == 0
    assert run_cli("collections", "delete", "missing", "--yes", "--data-dir", data, cwd=tmp_path).returncode == 1
    r = run_cli("collections", "delete", "drop", "--yes", "--data-dir", data, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    listed = run_cli("collections", "--data-dir", data, cwd=tmp_path).stdout
    assert "keep" in listed and "drop" not in listed
    again = run_cli("ingest", "notes", "--collection", "drop", "--data-dir", data, "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["added"] == 1  # nothing of the old collection was left behind


def test_serve_refuses_a_public_address_without_keys(tmp_path):
    r = run_cli(
        "serve", "--host", "0.0.0.0", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"), cwd=tmp_path
    )
    assert r.returncode == 1
    assert "without API keys" in r.stderr and "--allow-open" in r.stderr


def test_a_generator_that_cannot_be_built_stops_the_start(tmp_path):
    code = (
        "import sys; sys.modules['openai'] = None\n"
        "from app.api import create_app\nfrom service.settings import Settings\n"
        f"create_app(Settings(data_dir={str(tmp_path)!r}, generator='openai', llm_model='m'))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "needs the openai package" in r.stderr


# -- an open server: browser rules, limits and hostile input ------------------------------


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("open")
    env = {
        "SPANRAG_MAX_UPLOAD_BYTES": "300000",
        "SPANRAG_MAX_REQUEST_BYTES": "100000",
        "SPANRAG_MAX_CHAT_CHARS": "20000",
        "SPANRAG_RATE_LIMIT_PER_MINUTE": "0",
    }
    with SpanragServer(root / "data", cwd=root, env=env) as server:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            r = http.post("/v1/collections/docs/documents", json={"id": "alpha-notes", "text": ALPHA_TEXT})
            assert r.status_code == 201, r.text
            yield server, http


def post_raw(http: httpx.Client, path: str, raw: bytes, content_type: str = "application/json", **headers):
    return http.post(path, content=raw, headers={"content-type": content_type, **headers})


def test_a_cross_site_form_cannot_write(open_server):
    _, http = open_server
    form = http.post("/v1/collections/docs/documents", files={"file": ("evil.txt", b"Injected text.")})
    assert form.status_code == 415 and "X-Requested-With" in form.json()["detail"]
    urlencoded = post_raw(
        http, "/v1/collections/docs/documents", b"id=alpha-notes&text=x", "application/x-www-form-urlencoded"
    )
    plain = post_raw(
        http, "/v1/collections/docs/documents", json.dumps({"id": "alpha-notes", "text": "x"}).encode(), "text/plain"
    )
    assert urlencoded.status_code == 415 and plain.status_code == 415
    other_origin = http.post(
        "/v1/collections/docs/documents",
        json={"id": "alpha-notes", "text": "Injected."},
        headers={"Origin": "http://evil.example"},
    )
    assert other_origin.status_code == 403
    assert http.get("/v1/collections/docs/documents/alpha-notes").json()["text"] == ALPHA_TEXT
    tool = http.post(
        "/v1/collections/docs/documents",
        files={"file": ("tool.txt", b"A tool's upload.")},
        headers={"X-Requested-With": "curl"},
    )
    assert tool.status_code == 201, tool.text


def test_a_rebound_host_name_is_refused(open_server):
    _, http = open_server
    assert http.get("/v1/collections", headers={"Host": "attacker.example"}).status_code == 400
    assert http.get("/v1/collections", headers={"Host": "localhost"}).status_code == 200


def test_cors_is_off_unless_origins_are_configured(open_server):
    _, http = open_server
    preflight = http.options(
        "/v1/collections/docs/query", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize(
    "raw",
    [
        b'{"question": "q", "compress_ratio": NaN}',
        b'{"question": "q", "compress_ratio": Infinity}',
        b'{"question": "q", "top_k": -Infinity}',
        b'{"question": "\\ud800"}',
        b'{"question": "ok \\u0000 nul"}',
        b'{"question": "caf\xe9"}',
        b'{"question": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"question": "   "}',
        b'{"question": "q", "pipeline": "no-such-pipeline"}',
    ],
)
def test_hostile_query_bodies_are_4xx(open_server, raw):
    _, http = open_server
    for path in ("/v1/collections/docs/query", "/v1/collections/docs/retrieve"):
        r = post_raw(http, path, raw)
        assert 400 <= r.status_code < 500, (raw[:60], r.status_code, r.text[:300])
        assert r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"id": "\ud800", "text": "x"},
        {"id": "ok", "text": "bad \ud800 text"},
        {"id": "ok", "text": "fine", "title": "\udfff"},
        {"id": "ok", "text": "fine", "metadata": {"k": "\ud800"}},
    ],
)
def test_lone_surrogates_in_documents_are_422(open_server, body):
    _, http = open_server
    raw = json.dumps(body).encode()  # json.dumps escapes them as \\udXXX, as a client would
    r = post_raw(http, "/v1/collections/docs/documents", raw)
    assert r.status_code == 422, r.text
    assert http.get("/v1/collections/docs/documents/ok").status_code == 404


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [300, 2000])
def test_deeply_nested_metadata_is_refused_and_nothing_is_stored(open_server, depth):
    _, http = open_server
    raw = b'{"id": "deep", "text": "Deep metadata.", "metadata": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    r = post_raw(http, "/v1/collections/docs/documents", raw)
    assert r.status_code in (413, 422), r.text
    assert http.get("/v1/collections/docs/documents/deep").status_code == 404


def test_stored_metadata_is_always_readable_back(open_server):
    _, http = open_server
    doc = {"id": "meta", "text": "Metadata round trip.", "metadata": {**nested(12), "n": 1.5, "list": [1, "two"]}}
    assert http.post("/v1/collections/docs/documents", json=doc).status_code == 201
    back = http.get("/v1/collections/docs/documents/meta")
    assert back.status_code == 200 and back.json()["metadata"] == doc["metadata"]


def test_invalid_utf8_and_non_finite_numbers_in_a_json_document_are_422(open_server):
    _, http = open_server
    assert post_raw(http, "/v1/collections/docs/documents", b'{"id": "u", "text": "caf\xe9"}').status_code == 422
    assert (
        post_raw(
            http, "/v1/collections/docs/documents", b'{"id": "u", "text": "t", "metadata": {"x": NaN}}'
        ).status_code
        == 422
    )


def test_the_chat_endpoint_answers_bad_bytes_in_openai_shape(open_server):
    _, http = open_server
    for raw in (
        b'{"model": "spanrag:docs", "messages": [{"role": "user", "content": "caf\xe9"}]}',
        b'{"model": "spanrag:docs", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"model": "spanrag:docs", "temperature": NaN, "messages": [{"role": "user", "content": "q"}]}',
    ):
        r = post_raw(http, "/v1/chat/completions", raw)
        assert r.status_code == 400, r.text
        assert set(r.json()["error"]) >= {"message", "type", "code"}


def test_a_long_earlier_chat_turn_counts_towards_the_limit(open_server):
    _, http = open_server
    started = time.monotonic()
    r = http.post(
        "/v1/chat/completions",
        json={
            "model": "spanrag:docs",
            "messages": [
                {"role": "user", "content": "bikes " * 5000},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "and where are they?"},
            ],
        },
    )
    assert r.status_code == 400 and "SPANRAG_MAX_CHAT_CHARS" in r.json()["error"]["message"]
    assert time.monotonic() - started < 5


def test_validation_errors_never_echo_large_input(open_server):
    _, http = open_server
    big = "x" * 90_000
    r = http.post("/v1/collections/docs/query", json={"question": "q", "top_k": big})
    assert r.status_code == 422 and len(r.content) < 5_000
    r = http.post("/v1/collections/docs/documents", json={"id": big, "text": "t"})
    assert r.status_code == 422 and len(r.content) < 5_000


def test_bodies_over_the_limits_are_413(open_server):
    _, http = open_server
    query = http.post("/v1/collections/docs/query", json={"question": "q" * 200_000})
    assert query.status_code == 413
    document = http.post("/v1/collections/docs/documents", json={"id": "big", "text": "word " * 100_000})
    assert document.status_code == 413
    upload = http.post(
        "/v1/collections/docs/documents",
        files={"file": ("big.txt", b"word " * 100_000)},
        headers={"X-Requested-With": "t"},
    )
    assert upload.status_code == 413

    def chunks():  # no Content-Length: the limit is counted as the body streams
        for _ in range(40):
            yield b" " * 10_000

    streamed = http.post("/v1/collections/docs/query", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert http.get("/v1/collections/docs/documents/big").status_code == 404


def test_a_huge_table_or_deep_html_upload_is_refused_fast_and_creates_nothing(open_server):
    _, http = open_server
    wide_csv = (",".join(f"c{i}" for i in range(40_000)) + "\n" + ",".join("1" for _ in range(40_000)) + "\n").encode()
    deep_html = b"<html><body>" + b"<div>" * 20_000 + b"deep" + b"</div>" * 20_000 + b"</body></html>"
    for name, data in (("wide.csv", wide_csv), ("deep.html", deep_html)):
        started = time.monotonic()
        r = http.post(
            "/v1/collections/fresh/documents", files={"file": (name, data)}, headers={"X-Requested-With": "t"}
        )
        assert r.status_code in (413, 422), r.text
        assert time.monotonic() - started < 10
    names = [c["name"] for c in http.get("/v1/collections").json()["collections"]]
    assert "fresh" not in names


def test_a_blank_question_is_refused_and_the_schema_says_so(open_server):
    _, http = open_server
    assert http.post("/v1/collections/docs/query", json={"question": " \n\t"}).status_code == 422
    schema = http.get("/openapi.json").json()
    question = schema["components"]["schemas"]["QueryRequest"]["properties"]["question"]
    assert question.get("pattern") == r"\S"


def test_the_openapi_document_lists_the_error_answers(open_server):
    _, http = open_server
    paths = http.get("/openapi.json").json()["paths"]
    answers = paths["/v1/collections/{collection}/documents"]["post"]["responses"]
    assert {"401", "403", "404", "409", "413", "415", "422", "429"} <= set(answers)
    assert "delete" in paths["/v1/collections/{collection}/documents/{doc_id}"]


def test_405_names_every_method_of_the_path(open_server):
    _, http = open_server
    r = http.put("/v1/collections/docs/documents/alpha-notes", json={})
    assert r.status_code == 405
    assert {"GET", "DELETE"} <= {m.strip() for m in r.headers["allow"].split(",")}


def test_every_response_carries_a_request_id(open_server):
    _, http = open_server
    for r in (
        http.get("/v1/collections"),
        http.get("/v1/collections", headers={"Host": "attacker.example"}),
        http.post("/v1/collections/docs/query", json={"question": "q" * 200_000}),
    ):
        assert len(r.headers["x-request-id"]) >= 16
    assert http.get("/healthz", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"


# -- provenance ----------------------------------------------------------------------------


def test_an_http_write_cannot_replace_a_file_ingested_document(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "bikes.md").write_text("# Bikes\n\nThe bikes are kept in the blue shed.\n")
    data = tmp_path / "data"
    first = run_cli("ingest", "notes", "--collection", "docs", "--data-dir", str(data), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with SpanragServer(data, cwd=tmp_path) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        r = http.post("/v1/collections/docs/documents", json={"id": "notes/bikes.md", "text": "Injected text."})
        assert r.status_code == 409 and "spanrag ingest" in r.json()["detail"]
        r = http.post(
            "/v1/collections/docs/documents",
            files={"file": ("bikes.md", b"Injected.")},
            data={"doc_id": "notes/bikes.md"},
            headers={"X-Requested-With": "t"},
        )
        assert r.status_code == 409
        doc = http.get("/v1/collections/docs/documents/notes/bikes.md").json()
        assert "blue shed" in doc["text"]
        assert doc["source"] == "file" and str(tmp_path) not in json.dumps(doc)
    again = run_cli("ingest", "notes", "--collection", "docs", "--data-dir", str(data), "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["unchanged"] == 1


# -- secrets -------------------------------------------------------------------------------


def test_an_unreachable_llm_answers_503_without_its_credentials(tmp_path):
    env = {
        "SPANRAG_GENERATOR": "openai",
        "SPANRAG_LLM_MODEL": "m",
        "SPANRAG_LLM_MAX_RETRIES": "0",
        "SPANRAG_LLM_BASE_URL": f"http://bob:hunter2@127.0.0.1:{free_port()}/v1?api_key=sekrit",
    }
    with (
        SpanragServer(tmp_path / "data", cwd=tmp_path, env=env) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        assert http.post("/v1/collections/docs/documents", json={"id": "a", "text": ALPHA_TEXT}).status_code == 201
        r = http.post("/v1/collections/docs/query", json={"question": "Where are the bicycles?"})
        assert r.status_code == 503
        chat = http.post(
            "/v1/chat/completions",
            json={"model": "spanrag:docs", "stream": True, "messages": [{"role": "user", "content": "bicycles?"}]},
        )
        assert chat.status_code == 503
        for text in (r.text, chat.text, server.output(tail_chars=1_000_000)):
            assert "hunter2" not in text and "sekrit" not in text


# -- settings variants, in-process -----------------------------------------------------------


def in_process(make_rag, tmp_path, **settings) -> TestClient:
    from app.api import create_app

    rag = make_rag(tmp_path / "data", allowed_hosts=["testserver"], **settings)
    return TestClient(create_app(service=rag))


def test_configured_cors_origins_may_call_from_a_browser(make_rag, tmp_path):
    with in_process(make_rag, tmp_path, cors_origins=["http://app.example"]) as client:
        ok = client.options(
            "/v1/collections", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "GET"}
        )
        assert ok.headers["access-control-allow-origin"] == "http://app.example"
        other = client.options(
            "/v1/collections", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_requests_over_the_rate_are_429_with_retry_after(make_rag, tmp_path):
    secret = KeyStore(tmp_path / "data").create("docs", "read").secret
    other = KeyStore(tmp_path / "data").create("docs", "read").secret
    with in_process(make_rag, tmp_path, rate_limit_per_minute=60, rate_limit_burst=3) as client:
        statuses = [client.get("/v1/collections", headers=bearer(secret)).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        limited = client.get("/v1/collections", headers=bearer(secret))
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get("/v1/collections", headers=bearer(other)).status_code == 200  # per key


def test_readiness_turns_green_once_loaded(make_rag, tmp_path):
    from app.api import create_app

    app = create_app(service=make_rag(tmp_path / "data", allowed_hosts=["testserver"]))
    client = TestClient(app)  # not entered: no start-up has run yet
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    app.state.readiness.load()
    assert client.get("/readyz").json() == {"status": "ready"}
