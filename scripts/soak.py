"""Helper of scripts/soak.sh: reads the jobmanager's REST API and the S3 bucket (moto).

Run with the Python of the moto venv that scripts/setup.sh installs (it has boto3):

    soak.py free-port
    soak.py wait-s3 ENDPOINT                     # until moto answers as an S3 server (60 s)
    soak.py make-bucket ENDPOINT BUCKET
    soak.py registered REST                      # ids of the registered taskmanagers, one a line
    soak.py status REST JOB...                   # one line per job, see `status`
    soak.py orphans ENDPOINT BUCKET REST LIST_FILE JOB...

Every command prints plain text for the shell script; a failed request to the jobmanager is
reported as a job state UNREACHABLE (the jobmanager may be restarting), never as an exception.
"""

import json
import socket
import sys
import time
import urllib.error
import urllib.request

TIMEOUT = 5


def get_json(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return json.load(response)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def wait_s3(endpoint):
    """Waits until GET / answers with a bucket listing (moto is up)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(endpoint + "/", timeout=2) as response:
                if b"ListAllMyBucketsResult" in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"moto did not answer at {endpoint} within 60 s")


def make_bucket(endpoint, bucket):
    request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT", data=b"")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        if response.status != 200:
            sys.exit(f"creating bucket {bucket}: HTTP {response.status}")


def registered(rest):
    try:
        for tm in get_json(f"{rest}/taskmanagers").get("taskmanagers", []):
            print(tm["id"])
    except (OSError, ValueError):
        pass


def status(rest, *jobs):
    """Per job: `JOB STATE ALL_RUNNING SOURCE_RECORDS RESTARTS ATTEMPT TASKMANAGERS` where
    ALL_RUNNING is 1 when the job is RUNNING and every subtask of every vertex runs, and
    TASKMANAGERS the comma-separated ids running its subtasks (`-` for none)."""
    for job in jobs:
        try:
            d = get_json(f"{rest}/jobs/{job}")
        except (OSError, ValueError):
            print(job, "UNREACHABLE", 0, 0, 0, 0, "-")
            continue
        subtasks = [s for v in d.get("vertices", []) for s in v.get("subtasks", [])]
        complete = all(len(v.get("subtasks", [])) == v.get("parallelism", 0) for v in d.get("vertices", []))
        running = d.get("state") == "RUNNING" and subtasks and complete and all(s.get("state") == "Running" for s in subtasks)
        tms = sorted({s["taskmanager"] for s in subtasks if s.get("taskmanager")})
        print(job, d.get("state"), 1 if running else 0, d.get("source_records", 0), d.get("restarts", 0),
              d.get("attempt", 0), ",".join(tms) or "-")


def decode_metadata(data):
    """A `_metadata` file: magic `WEIRMD01`, xxh3-64 checksum (not verified here), JSON."""
    if data[:8] != b"WEIRMD01":
        raise ValueError("bad magic")
    return json.loads(data[16:])


def orphans(endpoint, bucket, rest, list_file, *jobs):
    """Compares the bucket's `checkpoints/` objects with what the retained checkpoints of the
    jobs use. Prints one line per job, `JOB OBJECTS RETAINED_IDS ORPHANS MISSING`, then a line
    `other N` (objects under `checkpoints/` of no listed job). Orphans: objects of the job that
    are neither under a retained `chk-<id>/` nor a shared file a retained checkpoint references;
    missing: files a retained checkpoint references that are not in the bucket. The keys of both
    go to LIST_FILE."""
    import boto3  # in the moto venv

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="checkpoints/"):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    keys_set = set(keys)
    strip = f"s3://{bucket}/"
    claimed = set()
    with open(list_file, "w") as listing:
        for job in jobs:
            prefix = f"checkpoints/{job}/"
            own_keys = [k for k in keys if k.startswith(prefix)]
            claimed.update(own_keys)
            try:
                report = get_json(f"{rest}/jobs/{job}/checkpoints")
            except (OSError, ValueError) as e:
                print(job, len(own_keys), "?", "?", "?")
                listing.write(f"{job}: cannot read the checkpoint report: {e}\n")
                continue
            retained = [c["id"] for c in report.get("retained", [])]
            referenced, missing = set(), []
            for cid in retained:
                key = f"{prefix}chk-{cid}/_metadata"
                if key not in keys_set:
                    missing.append(key)
                    continue
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                try:
                    metadata = decode_metadata(body)
                except ValueError as e:
                    missing.append(f"{key} (unreadable: {e})")
                    continue
                for task in metadata.get("tasks", []):
                    for handle in task["snapshot"]["handles"]:
                        uri = handle["uri"]
                        path = uri[len(strip):] if uri.startswith(strip) else uri
                        if handle.get("shared"):
                            referenced.add(path)
                        if path not in keys_set:
                            missing.append(path)
            own = tuple(f"{prefix}chk-{cid}/" for cid in retained)
            orphaned = [k for k in own_keys if not k.startswith(own) and k not in referenced]
            for k in orphaned:
                listing.write(f"orphaned {k}\n")
            for k in missing:
                listing.write(f"missing {k}\n")
            print(job, len(own_keys), ",".join(map(str, retained)) or "-", len(orphaned), len(missing))
        other = [k for k in keys if k not in claimed]
        for k in other:
            listing.write(f"other {k}\n")
        print("other", len(other))


if __name__ == "__main__":
    commands = {"free-port": free_port, "wait-s3": wait_s3, "make-bucket": make_bucket,
                "registered": registered, "status": status, "orphans": orphans}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: soak.py {'|'.join(commands)} ARGS...")
    commands[sys.argv[1]](*sys.argv[2:])
