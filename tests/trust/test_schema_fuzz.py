"""Schemathesis against the OpenAPI document, in-process (ASGI), on a temp SQLite store: every
operation, positive and negative data, bounded examples; no 5xx and no response off its schema.

Operations are parametrized here and driven with Hypothesis directly: schemathesis' own pytest
plugin (``from_fixture``) does not run under pytest 9."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
)

from tests.apps import make_app, sqlite_settings_in

pytestmark = pytest.mark.slow
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, response_headers_conformance,
          negative_data_rejection]
MAX_EXAMPLES = 12  # per operation and mode: about 600 cases in all, ~30 s on a shared 2-core box

_TMP = Path(tempfile.mkdtemp(prefix="prunescope-fuzz-"))
APP = make_app(sqlite_settings_in(_TMP))
SCHEMA = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
_cases: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    shutil.rmtree(_TMP, ignore_errors=True)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if _cases and capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\nschemathesis: {sum(_cases.values())} cases over {len(_cases)} operations; "
                  "any server error or schema violation fails its test")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_error_and_responses_match_schema(label: str, mode: GenerationMode) -> None:
    operation = OPERATIONS[label]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=5000, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    def run(case: schemathesis.Case) -> None:
        _cases[label] = _cases.get(label, 0) + 1
        if label == "GET /api/v1/jobs/events":  # an endless stream: bounded here, its filters still fuzzed
            max_s = (case.query or {}).get("max_s")
            if max_s is None or (isinstance(max_s, int | float) and not isinstance(max_s, bool) and max_s > 0.2):
                case.query = {**(case.query or {}), "max_s": 0.2}
        case.call_and_validate(checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        pytest.skip(f"{label} has no input that could be invalid")
