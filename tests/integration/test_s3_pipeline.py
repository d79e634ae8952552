"""The pipeline on the S3 store, end to end: a worker with PIXELPIPE_DATA=s3://... processes
uploads published by ``pixelpipe publish`` and by another service (an s3:// source it wrote
itself, the upload sent with Kafka's console producer); the outputs are in the bucket with the
sha256 the processed events record."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import WorkerProcess, json_lines, wait_for_records
from images import mixed_images
from kafka_broker import KAFKA_SH, REPO
from s3_server import S3Pipeline, S3Server

from pixelpipe.schemas import utc_now_iso
from pixelpipe.storage.s3 import S3BlobStore, S3Location
from pixelpipe.streams.topics import dlq_topic, processed_topic, uploads_topic

pytestmark = [pytest.mark.broker]

RESIZE = "resize:width=320,height=320,fit=inside"
WEBP = "format:type=webp,quality=80"


@pytest.fixture
def bucket(s3_server: S3Server, s3_pipeline: S3Pipeline, tmp_path: Path) -> Iterator[S3BlobStore]:
    """The test's prefix read with the store itself (verified reads)."""
    store = S3BlobStore(S3Location.parse(s3_pipeline.s3_env["PIXELPIPE_DATA"]),
                        cache_dir=tmp_path / "reader-cache", endpoint=s3_server.endpoint)
    yield store
    store.close()


def assert_outputs_in_bucket(server: S3Server, store: S3BlobStore,
                             renditions: list[dict[str, Any]]) -> None:
    for rendition in renditions:
        assert rendition["uri"].startswith(f"{store.location.url}/outputs/"), rendition
        # the object's file on the server's disk, read without any client: the right bytes
        key = store.location.key_of_uri(rendition["uri"])
        data = server.object_file(key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rendition["sha256"]
        assert len(data) == rendition["size"]
        assert store.read(rendition["uri"]) == data  # and through the store, verified


def test_a_worker_on_s3_processes_what_pixelpipe_publish_stored_there(
        s3_pipeline: S3Pipeline, s3_worker: WorkerProcess, s3_server: S3Server,
        bucket: S3BlobStore, tmp_path: Path) -> None:
    # Given six images published with the CLI, whose sources land in the bucket
    images = mixed_images(tmp_path / "in", 6)
    result = s3_pipeline.cli("publish", str(tmp_path / "in"), "--op", RESIZE, "--op", WEBP,
                             "--preset", "thumbnail", "--wait", "--timeout", "240")
    lines = json_lines(result.stdout)
    assert result.returncode == 0, result.stderr
    # Then each is processed, its outputs are in the bucket with their recorded sha256
    assert len(lines) == len(images)
    for line in lines:
        assert line["status"] == "processed", line
        renditions = line["outcome"]["renditions"]
        assert len(renditions) == 2
        assert_outputs_in_bucket(s3_server, bucket, renditions)
    # and the sources are there, content-addressed
    for image in images:
        sha = hashlib.sha256(image.path.read_bytes()).hexdigest()
        assert bucket.read(bucket.source_uri(sha)) == image.path.read_bytes()
    assert "data=s3://" in s3_worker.log()


def console_producer(bootstrap: str, topic: str, lines: list[tuple[str, bytes]]) -> None:
    """Publish ``key<TAB>value`` lines with Kafka's own console producer (the jars infra/kafka.sh
    resolved; ``kafka.tools`` in 3.x, ``org.apache.kafka.tools`` in 4.x)."""
    java = shutil.which("java")
    if java is None:
        pytest.fail("java is needed for Kafka's console producer")
    jars = subprocess.run(["bash", str(KAFKA_SH), "jars"], capture_output=True, text=True,
                          check=True, timeout=900).stdout.strip().splitlines()[-1]
    major = int(Path(jars).name.removeprefix("kafka-").split(".")[0])
    main = "kafka.tools.ConsoleProducer" if major < 4 else "org.apache.kafka.tools.ConsoleProducer"
    payload = b"".join(key.encode() + b"\t" + value + b"\n" for key, value in lines)
    assert all(b"\n" not in value and b"\t" not in value for _, value in lines)
    proc = subprocess.run(
        [java, "-Xmx256m", "-cp", f"{jars}/*",
         f"-Dlog4j.configuration=file:{REPO}/infra/.nonexistent", main,
         "--bootstrap-server", bootstrap, "--topic", topic,
         "--property", "parse.key=true", "--property", "key.separator=\t",
         "--producer-property", "acks=all"],
        input=payload, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]


def test_an_s3_source_another_service_wrote_is_processed_from_a_console_producer_event(
        s3_pipeline: S3Pipeline, s3_worker: WorkerProcess, s3_server: S3Server,
        bucket: S3BlobStore, tmp_path: Path) -> None:
    # Given a service that wrote an image into the bucket under its own key (not ours) ...
    (image,) = mixed_images(tmp_path / "svc", 1)
    data = image.path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    own_key = f"{bucket.location.prefix}-svc/incoming/{image.path.name}"
    target = s3_server.object_file(own_key)  # posix backend: a file is an object
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)

    def upload(uri: str, image_id: str) -> dict[str, Any]:
        return {
            "schema": "pixelpipe.upload/1", "event_id": str(uuid.uuid4()), "image_id": image_id,
            "source": {"uri": uri, "sha256": sha, "size": len(data),
                       "content_type": "image/jpeg"},
            "renditions": [{"name": "thumb", "operations": [RESIZE, WEBP]},
                           {"name": "large", "preset": "web-large"}],
            "submitted_at": utc_now_iso(), "priority": "normal",
        }

    good = upload(f"s3://{s3_server.bucket}/{own_key}", "svc-photo")
    # ... and two it must refuse: another bucket, and a key escaping with ..
    other_bucket = upload(f"s3://someone-elses-bucket/{own_key}", "svc-foreign")
    escape = upload(f"s3://{s3_server.bucket}/{bucket.location.prefix}/../etc/x", "svc-escape")
    events = [good, other_bucket, escape]
    # When the service publishes the events with Kafka's console producer
    console_producer(s3_pipeline.bootstrap, uploads_topic(s3_pipeline.prefix),
                     [(e["image_id"], orjson.dumps(e)) for e in events])
    # Then the good one is processed with its outputs in the bucket
    ids = {e["event_id"] for e in events}
    records = wait_for_records(
        s3_pipeline.bootstrap,
        [processed_topic(s3_pipeline.prefix), dlq_topic(s3_pipeline.prefix)],
        lambda rs: ids <= {orjson.loads(r.value).get("event_id") for r in rs},
        timeout=180, what="outcomes of the console producer's uploads")
    outcomes = {orjson.loads(r.value)["event_id"]: (r.topic, orjson.loads(r.value))
                for r in records}
    topic, processed = outcomes[good["event_id"]]
    assert topic == processed_topic(s3_pipeline.prefix), processed
    assert processed["source_sha256"] == sha
    assert_outputs_in_bucket(s3_server, bucket, processed["renditions"])
    # and the other two are dead letters: forbidden_source, on their first attempt
    for event in (other_bucket, escape):
        topic, letter = outcomes[event["event_id"]]
        assert topic == dlq_topic(s3_pipeline.prefix)
        assert letter["error"]["code"] == "forbidden_source", letter
