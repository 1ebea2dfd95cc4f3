"""Every example the API shows runs as written: the request-body examples of the OpenAPI schema,
and the README's curl calls (on a search the README's own POST example submitted)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import delete

from store.db import session_scope
from store.tables import Search

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8000"


def body_examples(schema: dict) -> list[tuple[str, str, dict]]:
    """(method, path, example) for each example of each operation's JSON request body."""
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = content.get("schema", {}).get("$ref", "")
            model = schema["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {}) if ref else {}
            examples = list(model.get("examples", []))
            if not examples and model.get("properties"):  # one example assembled from the fields' own
                fields = {
                    name: spec["examples"][0] for name, spec in model["properties"].items() if spec.get("examples")
                }
                examples = [fields] if set(model.get("required", [])) <= set(fields) else []
            found += [(method, path, example) for example in examples]
    return found


def test_every_request_body_example_of_the_schema_is_accepted(admin):
    schema = admin.get("/openapi.json").json()
    examples = body_examples(schema)
    assert {(m, p) for m, p, _ in examples} >= {("post", "/searches"), ("post", "/tokens")}
    for method, path, example in examples:
        response = admin.request(method.upper(), path, json=example)
        assert response.status_code < 300, f"{method} {path} {example}: {response.text}"


def readme_calls() -> list[tuple[str, str, str | None]]:
    """(method, path with query, JSON body) of each README curl call that needs no file of its own."""
    text = (ROOT / "README.md").read_text()
    calls = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in _commands(block):
            if not line.startswith("curl ") or "@" in line or re.search(r"\$(?!TOKEN\b|ID\b)[A-Z]", line):
                continue  # a file to upload, or the id of an upload (tests/app/test_*_api.py post those)
            words = shlex.split(line.replace("$ID", "SEARCH_ID"))
            method = words[words.index("-X") + 1] if "-X" in words else "GET"
            body = words[words.index("-d") + 1] if "-d" in words else None
            url = next(w for w in words if w.startswith(BASE))
            parts = urlsplit(url)
            calls.append((method, parts.path + (f"?{parts.query}" if parts.query else ""), body))
    return calls


def _commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, a quote left open continued on the next
    line (a JSON body over two lines), comments dropped."""
    commands, pending = [], ""
    for line in block.replace("\\\n", " ").splitlines():
        pending = f"{pending} {line.strip()}" if pending else line.split(" #", 1)[0].strip()
        try:
            shlex.split(pending)
        except ValueError:  # an open quote: the command goes on
            continue
        commands.append(pending)
        pending = ""
    return commands


@pytest.fixture
def forget_searches(app) -> Iterator[list[str]]:  # noqa: ANN001
    """Ids of searches a test made, deleted afterwards: the README's example architecture is the one
    the dashboard tests filter by."""
    made: list[str] = []
    yield made
    with session_scope(app.state.engine) as session:
        session.execute(delete(Search).where(Search.id.in_(made)))


def test_every_readme_curl_call_runs_as_written(admin, forget_searches):
    calls = readme_calls()
    posts = [c for c in calls if c[0] == "POST" and c[1] == "/searches"]
    assert posts and len(calls) >= 10
    created = admin.post("/searches", content=posts[0][2], headers={"content-type": "application/json"})
    assert created.status_code == 202, created.text
    forget_searches.append(created.json()["id"])
    for method, path, body in calls:
        response = admin.request(
            method,
            path.replace("SEARCH_ID", created.json()["id"]),
            content=body,
            headers={"content-type": "application/json"} if body else {},
        )
        # A queued search has no config or model yet (409) and cancel/retry may conflict (409):
        # both are the documented answers; a 4xx about the request itself is not.
        assert response.status_code in (200, 201, 202, 409), f"{method} {path}: {response.status_code} {response.text}"
        if response.status_code == 202 and "id" in response.json():
            forget_searches.append(response.json()["id"])


@pytest.mark.parametrize(
    ("operation", "codes"), [("/searches", {"401", "413", "503"}), ("/tokens", {"401", "403", "413", "503"})]
)
def test_secured_operations_document_their_error_answers(admin, operation, codes):
    documented = set(admin.get("/openapi.json").json()["paths"][operation]["post"]["responses"])
    assert codes <= documented
