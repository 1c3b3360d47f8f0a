#!/usr/bin/env python3
"""Checks the jobmanager's OpenAPI document (`GET /openapi.json`) against a live cluster with
Schemathesis, in two passes:

1. Every operation of the document is called with real ids (a running job, one of its vertices
   and checkpoints, a taskmanager, a savepoint and a disposal request, a submitted job that is
   then cancelled, a second job that is stopped with a savepoint), and each answer must be one
   the document lists, with its content type and schema (`case.validate_response`).
2. Schemathesis's property-based run over the operations that write nothing outside the cluster:
   generated and invalid ids, queries and bodies must get answers the document lists (status,
   content type, schema), invalid input must be refused with a 4xx, and nothing may answer 5xx.

Exits 1 with what failed. Used by tests/tests/openapi.rs.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import schemathesis


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the jobmanager's REST URL")
    parser.add_argument("--job", required=True, help="a running job with checkpointing on")
    parser.add_argument("--victim", required=True, help="a running job this check stops with a savepoint")
    parser.add_argument("--taskmanager", required=True)
    parser.add_argument("--plugin", required=True, help="a job plugin to submit (then cancel)")
    parser.add_argument("--plugin-args", default="[]", help="its arguments, a JSON array")
    parser.add_argument("--savepoint-dir", required=True)
    parser.add_argument("--max-examples", type=int, default=15)
    parser.add_argument("--report-dir", required=True)
    args = parser.parse_args()

    schema = schemathesis.openapi.from_url(f"{args.url}/openapi.json")
    failures = []
    called = set()

    def call(method, path, path_parameters=None, query=None, body=None, media_type=None):
        """Calls one operation with real data and validates the answer; returns it (or None)."""
        operation = schema[path][method]
        kwargs = {"path_parameters": path_parameters or {}, "query": query}
        if body is not None:
            kwargs["body"] = body
            if media_type:
                kwargs["media_type"] = media_type
        case = operation.Case(**kwargs)
        response = case.call(base_url=args.url)
        called.add((method.upper(), path))
        try:
            case.validate_response(response)
        except (Exception, BaseExceptionGroup) as e:  # Schemathesis raises a group of failures.
            failures.append(f"{method.upper()} {path} ({response.status_code}): {e}\n  body: {response.text[:600]}")
            return None
        return response

    job = {"jobid": args.job}
    checkpoints = call("GET", "/jobs/{jobid}/checkpoints", job)
    completed = checkpoints.json()["latest"]["completed"] if checkpoints is not None else None
    checkpoint = str(completed["id"]) if completed else "1"
    for path in ["/healthz", "/readyz", "/openapi.json", "/overview", "/config", "/jobmanager/config",
                 "/taskmanagers", "/jobs/overview", "/jobs"]:
        call("GET", path)
    call("GET", "/taskmanagers/{taskmanagerid}", {"taskmanagerid": args.taskmanager})
    call("GET", "/taskmanagers/{taskmanagerid}/metrics", {"taskmanagerid": args.taskmanager})
    call("GET", "/taskmanagers/{taskmanagerid}/metrics", {"taskmanagerid": args.taskmanager},
         query={"get": "Status.Process.Memory.RSS,Status.Slots.Total"})
    for path in ["/jobs/{jobid}", "/jobs/{jobid}/plan", "/jobs/{jobid}/exceptions", "/jobs/{jobid}/metrics",
                 "/jobs/{jobid}/checkpoints/config"]:
        call("GET", path, job)
    call("GET", "/jobs/{jobid}/metrics", job, query={"get": "numRestarts,lastCheckpointDuration"})
    for path in ["/jobs/{jobid}/vertices/{vertexid}", "/jobs/{jobid}/vertices/{vertexid}/backpressure",
                 "/jobs/{jobid}/vertices/{vertexid}/watermarks"]:
        for vertex in ["0", "1"]:
            call("GET", path, {**job, "vertexid": vertex})
    call("GET", "/jobs/{jobid}/checkpoints/details/{checkpointid}", {**job, "checkpointid": checkpoint})

    triggered = call("POST", "/jobs/{jobid}/checkpoints", job, body={})
    if triggered is not None:
        request = triggered.json()["request-id"]
        poll(lambda: call("GET", "/jobs/{jobid}/checkpoints/{triggerid}", {**job, "triggerid": request}))
    savepoint = call("POST", "/jobs/{jobid}/savepoints", job, body={"target-directory": args.savepoint_dir})
    if savepoint is not None:
        request = savepoint.json()["request-id"]
        poll(lambda: call("GET", "/jobs/{jobid}/savepoints/{triggerid}", {**job, "triggerid": request}))
    disposal = call("POST", "/savepoint-disposal", body={"savepoint-path": f"{args.savepoint_dir}/no-such-savepoint"})
    if disposal is not None:
        request = disposal.json()["request-id"]
        poll(lambda: call("GET", "/savepoint-disposal/{triggerid}", {"triggerid": request}))
    stopped = call("POST", "/jobs/{jobid}/stop", {"jobid": args.victim}, body={"targetDirectory": args.savepoint_dir})
    if stopped is not None:
        request = stopped.json()["request-id"]
        poll(lambda: call("GET", "/jobs/{jobid}/savepoints/{triggerid}", {"jobid": args.victim, "triggerid": request}))
    plugin = Path(args.plugin).read_bytes()
    submitted = call("POST", "/jobs", body={"plugin": plugin, "args": args.plugin_args, "parallelism": "1"},
                     media_type="multipart/form-data")
    if submitted is not None:
        call("PATCH", "/jobs/{jobid}", {"jobid": submitted.json()["jobid"]}, query={"mode": "cancel"})
    # Prometheus text is no JSON: its content type is what the document says.
    call("GET", "/metrics")

    documented = {(method.upper(), path) for path, item in schema.raw_schema["paths"].items() for method in item}
    missing = sorted(documented - called)
    if missing:
        failures.append(f"operations this check did not call with real data: {missing}")

    # Property-based: everything but the operations that write outside the cluster (a savepoint
    # or a stop writes to the target directory it is given; a submission stores the upload) and
    # the Prometheus text (checked by tests/tests/metrics.rs). First with generated ids (mostly
    # unknown ones: the error answers), then with the real ones (the answers about them).
    config = Path(args.report_dir) / "schemathesis.toml"
    config.write_text(
        "[parameters]\n"
        f"jobid = {json.dumps(args.job)}\n"
        'vertexid = "1"\n'
        f"checkpointid = {json.dumps(checkpoint)}\n"
        f"taskmanagerid = {json.dumps(args.taskmanager)}\n"
        'triggerid = "1"\n'
        "\n[[operations]]\n"
        'include-operation-id = "cancelJob"\n'
        f"parameters = {{ jobid = {json.dumps(args.victim)} }}\n"
    )
    for run_config in [None, config]:
        command = [str(Path(sys.executable).parent / "schemathesis")]
        if run_config:
            command += ["--config-file", str(run_config)]
        command += [
            "run", f"{args.url}/openapi.json",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                        "response_schema_conformance,negative_data_rejection",
            "--exclude-operation-id", "triggerSavepoint",
            "--exclude-operation-id", "stopJob",
            "--exclude-operation-id", "submitJob",
            "--exclude-operation-id", "prometheusMetrics",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", str(args.max_examples),
            "--seed", "7",
            "--generation-database", "none",
            "--workers", "1",
            "--no-color",
            "--report", "junit",
            "--report-dir", args.report_dir,
        ]
        # In the report directory: Schemathesis keeps its state in `.schemathesis/` of its cwd.
        run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=args.report_dir)
        print(run.stdout[-6000:])
        if run.returncode != 0:
            failures.append(f"schemathesis run exited {run.returncode}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}")

    if failures:
        print("\n\n".join(failures), file=sys.stderr)
        return 1
    print(f"OK: {len(called)} operations called with real data and validated; property-based run passed")
    return 0


def poll(check, timeout=60.0):
    """Calls `check` until the operation it polls completed (the answer says COMPLETED)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = check()
        if response is None or response.json()["status"]["id"] == "COMPLETED":
            return
        time.sleep(0.3)
    raise SystemExit("a polled operation did not complete in time")


if __name__ == "__main__":
    sys.exit(main())
