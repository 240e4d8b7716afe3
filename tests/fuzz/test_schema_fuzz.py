"""`make fuzz` on a small budget, so CI keeps the OpenAPI document and the API honest with each other: a fixed seed,
a few examples per operation, no stateful phase, each role on its own throwaway server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.schema_fuzz import ROLES, build_tiny_model, fuzz_role


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("fuzz-model"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("role", ROLES)
def test_schema_fuzz(role: str, fuzz_model: Path, tmp_path: Path) -> None:
    result = fuzz_role(role, tmp_path, fuzz_model, max_examples=3, max_time=15, seed=20261202,
                       phases="coverage,fuzzing")
    assert result.ok, result.report.read_text()[-20_000:]
