"""``pixelpipe store verify [--repair]``: a corrupted and a missing local file, a corrupted S3
object, found against the processed events' sha256 and repaired by republishing the upload."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from harness import PipelineEnv, WorkerProcess, json_lines
from images import mixed_images
from s3_server import S3Pipeline, S3Server

from pixelpipe.storage.s3 import S3Location

pytestmark = [pytest.mark.broker]

OPS = ("--op", "resize:width=240,height=240,fit=inside", "--op", "format:type=webp,quality=80")


def publish(env: PipelineEnv, folder: Path, count: int) -> list[dict[str, Any]]:
    mixed_images(folder, count)
    result = env.cli("publish", str(folder), *OPS, "--wait", "--timeout", "240")
    lines = json_lines(result.stdout)
    assert result.returncode == 0 and len(lines) == count, result.stderr
    assert all(line["status"] == "processed" for line in lines), lines
    return [r for line in lines for r in line["outcome"]["renditions"]]


def verify(env: PipelineEnv, *args: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    result = env.cli("store", "verify", "--json", *args, check=False)
    objects = json_lines(result.stdout)
    assert objects, result.stderr.decode(errors="replace")
    return result.returncode, objects[:-1], objects[-1]


def test_verify_finds_and_repairs_a_corrupt_and_a_missing_local_output(
        pipeline: PipelineEnv, worker: WorkerProcess, tmp_path: Path) -> None:
    renditions = publish(pipeline, tmp_path / "in", 3)
    corrupt, missing = (pipeline.data_dir / r["uri"].removeprefix("blob://")
                        for r in renditions[:2])
    # bit rot in one output, the other one lost
    corrupt.write_bytes(os.urandom(corrupt.stat().st_size))
    missing.unlink()
    code, findings, summary = verify(pipeline)
    assert code == 1
    assert summary["checked_outputs"] == 3 and summary["checked_sources"] == 3
    assert (summary["bad"], summary["repaired"]) == (2, 0)
    assert {(f["uri"], f["problem"]) for f in findings} == {
        (renditions[0]["uri"], "corrupt"), (renditions[1]["uri"], "missing")}
    # --repair re-renders both from their (intact) sources
    code, findings, summary = verify(pipeline, "--repair")
    assert code == 0, findings
    assert (summary["bad"], summary["repaired"], summary["republished"]) == (2, 2, 2)
    assert {f["repair"] for f in findings} == {"repaired"}
    for rendition in renditions[:2]:
        data = (pipeline.data_dir / rendition["uri"].removeprefix("blob://")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rendition["sha256"]
    code, findings, summary = verify(pipeline)
    assert (code, summary["bad"], summary["checked"]) == (0, 0, 6)


def test_verify_finds_and_repairs_a_corrupt_s3_object(
        s3_pipeline: S3Pipeline, s3_worker: WorkerProcess, s3_server: S3Server,
        tmp_path: Path) -> None:
    renditions = publish(s3_pipeline, tmp_path / "in", 2)
    location = S3Location.parse(s3_pipeline.s3_env["PIXELPIPE_DATA"])
    bad = renditions[0]
    target = s3_server.object_file(location.key_of_uri(bad["uri"]))
    target.write_bytes(os.urandom(target.stat().st_size))  # behind the server's back
    code, findings, summary = verify(s3_pipeline, "--since", "1h")
    assert code == 1
    assert (summary["checked"], summary["bad"]) == (4, 1)
    (finding,) = findings
    assert (finding["uri"], finding["problem"], finding["kind"]) == (bad["uri"], "corrupt",
                                                                     "output")
    # --repair deletes the corrupt object (writes are create-only) and republishes the upload
    code, findings, summary = verify(s3_pipeline, "--repair")
    assert code == 0, findings
    assert (summary["bad"], summary["repaired"]) == (1, 1)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == bad["sha256"]
    code, _, summary = verify(s3_pipeline)
    assert (code, summary["bad"]) == (0, 0)
    # and the human form says so in one line
    plain = s3_pipeline.cli("store", "verify").stdout.decode()
    assert "4 (2 outputs, 2 sources)" in plain and "0 bad" in plain
