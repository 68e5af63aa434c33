"""schemathesis against calibkit serve's own OpenAPI document: no 5xx, no schema violation.

The server runs with small limits (a 64-token context, max_tokens <= 2, 2 prompts) so that every
generated request is answered quickly. "Schema-valid request rejected" is left out:
a prompt longer than the context is a legitimate 400 that OpenAPI cannot state.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from calibkit.server import create_key

from server_harness import ServerProcess

pytestmark = pytest.mark.model


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path):
    pytest.importorskip("llama_cpp")
    st = Path(sys.executable).with_name("st")
    cmd = [str(st)] if st.exists() else [shutil.which("st") or "st"]
    key, _ = create_key(tmp_path / "keys.json")
    args = ["--model", "llama-8b", "--keys-file", str(tmp_path / "keys.json"), "--n-ctx", "64",
            "--max-tokens-limit", "2", "--max-n", "2", "--max-prompts", "2", "--max-body-bytes", "65536"]
    with ServerProcess(args, tmp_path / "server") as srv:
        origin = srv.base.removesuffix("/v1")
        run = subprocess.run(
            [*cmd, "run", f"{origin}/openapi.json", "--header", f"Authorization: Bearer {key}",
             "--checks", "all", "--exclude-checks", "positive_data_acceptance",
             "--max-examples", "60", "--seed", "1", "--workers", "1", "--request-timeout", "120"],
            capture_output=True, text=True, cwd=tmp_path, timeout=400,
        )
        assert srv.alive
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "No issues found" in out, out[-3000:]
    assert "Traceback" not in srv.stderr(), srv.stderr()[-3000:]
