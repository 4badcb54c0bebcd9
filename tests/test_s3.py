"""Results on S3 object storage, through snakemake-storage-plugin-s3.

A moto S3 server on 127.0.0.1 stands in for the object store (no other address is
contacted). The `prepare_dataset` step of the tiny configuration (config/test.yaml) runs with the bucket as Snakemake's default storage, as
profiles/slurm/README.md ("Results on object storage") tells a user to do: its input is
read from the bucket and its outputs are written there, not to the working directory.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import CONFIGFILE, copy_repo

BUCKET = "forbidden-facts"
PREFIX = "runs/tiny"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3():
    """(endpoint URL, boto3 client) of a moto S3 server on a free loopback port."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **KEYS)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()


def test_prepare_dataset_reads_and_writes_the_bucket(tmp_path, s3):
    endpoint, client = s3
    # A fresh copy: the outputs must appear in the bucket, and nowhere in the checkout.
    workdir = copy_repo(tmp_path / "repo")
    # Every input is read under the prefix, so the facts file goes there first.
    facts_csv = "data/facts/tiny.csv"  # datasets.tiny.path of config/test.yaml
    client.upload_file(str(workdir / facts_csv), BUCKET, f"{PREFIX}/{facts_csv}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # never look for cloud credentials
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        # Targets first: the storage options take several values each.
        "resources/datasets/tiny/facts.parquet",
        "--cores",
        "1",
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        f"s3://{BUCKET}/{PREFIX}",
        "--storage-s3-endpoint-url",
        endpoint,
        "--storage-s3-access-key",
        KEYS["aws_access_key_id"],
        "--storage-s3-secret-key",
        KEYS["aws_secret_access_key"],
        # --configfile takes several values too, so it goes last.
        "--configfile",
        CONFIGFILE,
    ]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])
    keys = {obj["Key"].removeprefix(f"{PREFIX}/") for obj in listed}
    assert {
        "resources/datasets/tiny/facts.parquet",
        "resources/datasets/tiny/facts_report.json",
        "logs/prepare_dataset/tiny.log",
    } <= keys, keys
    # Outputs go to the bucket, not to the working directory.
    assert not (workdir / "resources/datasets/tiny/facts.parquet").exists()

    def read(key: str) -> bytes:
        return client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read()

    facts = pd.read_parquet(io.BytesIO(read("resources/datasets/tiny/facts.parquet")))
    tiny = pd.read_csv(workdir / facts_csv, dtype=str)
    assert sorted(facts.fact_id) == sorted(tiny.fact_id)
    report = json.loads(read("resources/datasets/tiny/facts_report.json"))
    assert report["dataset"] == "tiny" and report["n_facts"] == len(facts)
