"""schemathesis against the live router's OpenAPI document: every operation,
every check, at least 100 generated cases per operation, with an API key (and
without one, for the `ignored_auth` check). The key has no `admin` scope, so
the /admin operations are checked for answering 403 as documented. No server error and no response
that breaks the documented schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.processes import RouterProcess
from router import keys
from tests.conftest import ROOT

KEY = keys.new_key()
CONFIG = Path(__file__).with_name("schemathesis.toml")
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="module")
def router(triton, redis_server, tmp_path_factory):
    env = {"API_KEYS": json.dumps([keys.entry("fuzz", KEY, ["predict", "jobs", "metrics"], "100000/second")]),
           "REDIS_URL": redis_server.url, "REQUEST_LOGGING": "false", "TRITON_REFRESH_S": "0.5"}
    with RouterProcess(tmp_path_factory.mktemp("fuzz-router"), triton, env) as proc:
        yield proc


def test_every_operation_and_every_check(router, tmp_path):
    report = tmp_path / "schemathesis.json"
    # One worker: hypothesis describes its strategies with ast.parse, which CPython 3.11
    # does not do safely from two threads at once ("AST constructor recursion depth mismatch").
    command = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG), "run",
               f"{router.url}/openapi.json", "--checks", "all", "--max-examples", "100", "--workers", "1",
               "--seed", "20261125", "--no-color", "-H", f"Authorization: Bearer {KEY}",
               "--report", "json", "--report-json-path", str(report), "--generation-database", "none"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    result = json.loads(report.read_text())
    cases = {op: sum(sum(phase.values()) for phase in rates.values()) for op, rates in result["valid_rates"].items()}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "schemathesis.json").write_text(json.dumps({"cases_per_operation": cases,
                                                             "test_cases": result["test_cases"]}, indent=2))
    assert done.returncode == 0 and result["exit_code"] == 0, done.stdout[-6000:]
    assert result["failures"] == [] and result["errors"] == []
    assert result["operations"]["tested"] == result["operations"]["total"] == 20  # /v2 is not in the document
    assert result["test_cases"]["with_failures"] == 0
    # operations that take input get at least 100 cases; those without parameters have few distinct ones
    for op in ("POST /predict", "GET /predict", "POST /predict/batch", "POST /models/{model}/predict", "POST /jobs",
               "GET /jobs/{job_id}"):
        assert cases[op] >= 100, (op, cases)
