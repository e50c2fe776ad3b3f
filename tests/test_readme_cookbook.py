"""README's curl cookbook runs as printed, as one bash script, against a live service: gunicorn with 2
workers and a consumer process, with and without an API token."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import TOKEN
from jobs_support import WorkerProcess, job_env
from readme_support import sh_blocks

from service.testing import GunicornServer


@pytest.mark.parametrize("token", [None, TOKEN], ids=["open", "with-token"])
def test_the_curl_cookbook_works_as_printed(token, model_dir, tmp_path):
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: README's curl cookbook cannot be run")
    (script,) = sh_blocks("curl cookbook")
    env = job_env(tmp_path, MINIGRAD_POLL_INTERVAL=0.05)
    env.pop("MINIGRAD_API_TOKEN", None)
    if token:
        env["MINIGRAD_API_TOKEN"] = token
    with GunicornServer(env=env, workers=2) as server:
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            # cwd: the directory whose models/ the script uploads from (the service's own model directory).
            run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c",
                                  script.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")],
                                 cwd=model_dir.parent, env=env, capture_output=True, text=True, timeout=120)
        finally:
            worker.stop()
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[:2] == ["iris v1 4->3", "xor v1 2->1"]
    assert [round(row[0]) for row in json.loads(lines[2])] == [1, 0]
    assert json.loads(lines[3]) == {"name": "my-xor", "version": 1}
    job = json.loads(lines[4])
    assert job["status"] == "succeeded" and job["progress"] == {"epoch": 300, "epochs": 300}
    assert job["error"] is None and job["final_loss"] < 0.05
    assert json.loads((model_dir.parent / "my-xor-tuned.json").read_text())["metadata"]["epochs"] == 300
    assert json.loads(lines[5]) == {"name": "my-xor", "version": 2}
    used = json.loads(lines[6])
    assert used["version"] == 2 and [round(row[0]) for row in used["outputs"]] == [1, 0]
    assert len(lines) == 7
