"""schemathesis over the whole OpenAPI schema: generated requests, valid and invalid, to every
operation, as an admin.  No answer may be a server error, and every answer must be one the schema
documents, with the documented content type and body shape.  Examples are bounded so this runs in
seconds per backend (CI time is tight); `AUTOSLIM_SCHEMATHESIS_EXAMPLES` raises it for a long run.
"""

from __future__ import annotations

import builtins
import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency (pip install -e .[dev])")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402 - after the importorskip
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("AUTOSLIM_SCHEMATHESIS_EXAMPLES", "10"))
EXCEPTION_GROUP = getattr(builtins, "BaseExceptionGroup", Exception)  # a builtin from Python 3.11
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(app):  # noqa: ANN001, ANN201 - a FastAPI app, a schemathesis schema
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def run_operation(operation, mode: GenerationMode, headers: dict[str, str], sent: list[int]) -> str | None:  # noqa: ANN001
    """Up to `EXAMPLES` generated requests to one operation (counted in ``sent``); the first
    failure, as text, or None."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case) -> None:  # noqa: ANN001 - a schemathesis Case
        sent[0] += 1
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # an operation without parameters or body has no invalid request
        return None
    except (Exception, EXCEPTION_GROUP) as failure:  # noqa: BLE001 - every failure is reported, all operations run
        details = "\n".join(str(e) for e in getattr(failure, "exceptions", [failure]))
        return f"{operation.label} ({mode.value}): {details[:1500]}"
    return None


def test_no_server_error_and_no_schema_violation(api_schema, tokens):  # noqa: ANN001
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    sent = [0]
    failures = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (failure := run_operation(operation, mode, headers, sent))
    ]
    print(f"schemathesis: {sent[0]} requests to {len(operations)} operations, {len(failures)} failing")
    assert not failures, "\n\n".join(failures)
    assert sent[0] >= 2 * len(operations)
