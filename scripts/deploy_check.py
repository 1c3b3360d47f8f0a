#!/usr/bin/env python3
"""Offline checks of Weir's deployment artifacts (deploy/): the Helm chart, the plain manifests,
the container image's Dockerfile and entrypoint. No cluster, container engine or network:

- the chart: `helm lint --strict` and a render (Helm's own engine, helm-python-sdk) for every
  ci/*-values.yaml and values-ha.yaml; every rendered object validated against the newest
  Kubernetes version's OpenAPI schemas that kubernetes-validate bundles (strict: unknown fields
  are errors); structural facts asserted on the objects themselves (probes, ports, Services that
  select the right pods, config keys that exist in the Rust configuration structs, credentials
  only from Secrets, non-root pods, the config checksum, ...);
- values.schema.json rejects bad values with a message naming the field, and the templates' own
  guards (behind the schema) refuse what the schema cannot express;
- deploy/k8s equals a fresh render of the chart (and `kubectl kustomize` builds it, when kubectl
  is installed);
- the Dockerfile's structure, and the entrypoint script run with fake Weir binaries.

Prints one line per group that passed; exits 1 with the failures listed otherwise.

    ~/.cache/weir/tools/venv/bin/python scripts/deploy_check.py   (scripts/test.sh runs it)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from pathlib import Path
from typing import Any, Callable

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
CHART = ROOT / "deploy" / "helm" / "weir"
DOCKER = ROOT / "deploy" / "docker"
sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(SCRIPTS))

try:
    import helm_python
    import kubernetes_validate
    import yaml
    from helm_python import Chart
except ImportError as e:  # pragma: no cover
    print(f"deploy_check.py: {e}: run it with the venv's python that scripts/setup.sh prepares "
          f"(${{WEIR_TOOLS_DIR:-~/.cache/weir/tools}}/venv/bin/python)", file=sys.stderr)
    sys.exit(2)

import render_k8s_manifests  # noqa: E402
from render_chart import load_values, render_raw, split_documents  # noqa: E402

UID = 10001
CONFIG_DIR = "/etc/weir"
# What the pods must look like, independently of the templates.
COMPONENTS = {
    "jobmanager": {
        "kind": "Deployment",
        "config": "jobmanager.toml",
        "ports": {"rest": 8081, "rpc": 6123},
        "probe_port": 8081,
        # TOML address key -> container port name
        "listen": {"rest_addr": "rest", "rpc_addr": "rpc"},
        "writable_keys": ["plugin_cache_dir"],
        "struct": ("jobmanager/src/config.rs", "JobManagerConfig"),
    },
    "taskmanager": {
        "kind": "StatefulSet",
        "config": "taskmanager.toml",
        "ports": {"rpc": 6122, "data": 6121, "http": 9249},
        "probe_port": 9249,
        "listen": {"rpc_addr": "rpc", "data_addr": "data", "http_addr": "http"},
        "writable_keys": ["plugin_dir", "state_dir"],
        "struct": ("taskmanager/src/process.rs", "TaskManagerProcessConfig"),
    },
}


# --------------------------------------------------------------------------------------------
# Reporting


class Group:
    """A group of checks: passes when none of its checks failed."""

    def __init__(self, name: str):
        self.name = name
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.count = 0

    def check(self, condition: Any, message: str) -> bool:
        self.count += 1
        if not condition:
            self.failures.append(message)
        return bool(condition)

    def eq(self, actual: Any, expected: Any, what: str) -> bool:
        return self.check(actual == expected, f"{what}: {actual!r}, expected {expected!r}")


RESULTS: list[Group] = []


def run_group(name: str, body: Callable[[Group], None]) -> Group:
    group = Group(name)
    try:
        body(group)
    except Exception as e:  # a crash of a check is a failure of its group
        tb = traceback.extract_tb(e.__traceback__)[-1]
        group.failures.append(f"{type(e).__name__}: {str(e).strip()} (deploy_check.py:{tb.lineno})")
    RESULTS.append(group)
    if group.failures:
        print(f"FAIL {name}")
        for failure in group.failures:
            print("     - " + failure.replace("\n", "\n       "))
    else:
        notes = f" ({'; '.join(group.notes)})" if group.notes else ""
        print(f"ok   {name}: {group.count} checks{notes}")
    sys.stdout.flush()
    return group


# --------------------------------------------------------------------------------------------
# Helpers


def rust_struct_fields(relative: str, struct: str) -> dict[str, str]:
    """The fields of a Rust struct (`pub name: Type,`) from its source."""
    text = (ROOT / relative).read_text()
    match = re.search(r"pub struct %s \{(.*?)\n\}" % re.escape(struct), text, re.S)
    if not match:
        raise ValueError(f"no `pub struct {struct}` in {relative}")
    return dict(re.findall(r"^\s*pub (\w+): ([^\n]+?),\s*$", match.group(1), re.M))


def toml_fits(rust_type: str, value: Any) -> bool:
    """Whether a TOML value deserializes into a field of this Rust type (serde, toml crate)."""
    t = rust_type.replace(" ", "")
    if t in ("String", "PathBuf", "std::path::PathBuf"):
        return isinstance(value, str)
    if re.fullmatch(r"[ui](8|16|32|64|size)", t):
        return isinstance(value, int) and not isinstance(value, bool) and (value >= 0 or t.startswith("i"))
    if t in ("f32", "f64"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "bool":
        return isinstance(value, bool)
    if re.fullmatch(r"(std::collections::)?(BTreeMap|HashMap)<String,String>", t):
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    raise ValueError(f"deploy_check.py does not know how TOML maps to the Rust type {rust_type}")


def fullname(values: dict[str, Any], release: str) -> str:
    """The chart's <fullname>, computed the usual way (not by the templates)."""
    if values.get("fullnameOverride"):
        return values["fullnameOverride"]
    name = values.get("nameOverride") or "weir"
    return release if name in release else f"{release}-{name}"


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(g: Group, objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    found = find(objects, kind, name)
    g.check(len(found) == 1, f"expected one {kind} {name}, found {len(found)}")
    return found[0] if found else None


def k8s_validate(g: Group, objects: list[dict[str, Any]], where: str) -> str:
    version = kubernetes_validate.latest_version()
    for obj in objects:
        label = f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            g.check(True, "")
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.absolute_path)
            g.check(False, f"{label} is invalid for Kubernetes {version} at {path or '(root)'}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            g.check(False, f"{label}: {e.message}")
    return version


def env_by_name(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


# --------------------------------------------------------------------------------------------
# The chart's renders


def expected_storage_options(values: dict[str, Any]) -> dict[str, str]:
    storage = values["storage"]
    options: dict[str, str] = {}
    if storage.get("endpoint"):
        options["aws_endpoint"] = storage["endpoint"]
    if storage.get("region"):
        options["aws_region"] = storage["region"]
    if storage.get("allowHttp"):
        options["aws_allow_http"] = "true"
    for key, value in (storage.get("options") or {}).items():
        options[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return options


def check_config_file(g: Group, component: str, data: dict[str, Any], values: dict[str, Any], name: str) -> None:
    """One process's TOML: every key is a field of the Rust struct with a fitting type, and the
    values are what the chart promises."""
    spec = COMPONENTS[component]
    fields = rust_struct_fields(*spec["struct"])
    for key, value in data.items():
        if g.check(key in fields, f"{spec['config']}: key {key!r} is not a field of {spec['struct'][1]} "
                                  f"({spec['struct'][0]}), and the process refuses unknown keys"):
            g.check(toml_fits(fields[key], value),
                    f"{spec['config']}: {key} = {value!r} does not fit the Rust type {fields[key]}")
    for key, port_name in spec["listen"].items():
        g.eq(data.get(key), f"0.0.0.0:{spec['ports'][port_name]}", f"{spec['config']}: {key}")
    g.eq(data.get("storage_options", {}), expected_storage_options(values), f"{spec['config']}: storage_options")
    for key in data.get("storage_options", {}):
        g.check(not re.search(r"secret|access_key|password|token", key),
                f"{spec['config']}: storage_options.{key} looks like a credential (only from a Secret)")
    v = values[component]
    if component == "jobmanager":
        ha = values["highAvailability"]
        g.eq(data.get("storage"), values["storage"]["url"], "jobmanager.toml: storage")
        g.eq(data.get("high_availability"), ha["enabled"], "jobmanager.toml: high_availability")
        g.eq(data.get("ha_lease_ms"), ha["leaseMs"], "jobmanager.toml: ha_lease_ms")
        g.eq(data.get("ha_renew_interval_ms"), ha["renewIntervalMs"], "jobmanager.toml: ha_renew_interval_ms")
        g.eq(data.get("ha_renew_deadline_ms"), ha["renewDeadlineMs"], "jobmanager.toml: ha_renew_deadline_ms")
        g.eq(data.get("heartbeat_timeout_ms"), v["heartbeatTimeoutMs"], "jobmanager.toml: heartbeat_timeout_ms")
        g.eq(data.get("max_upload_mb"), v["maxUploadMb"], "jobmanager.toml: max_upload_mb")
        g.eq(data.get("savepoint_dir"), v["savepointDir"] or None, "jobmanager.toml: savepoint_dir")
        restart = {"type": "restart_strategy", "attempts": "restart_attempts", "delayMs": "restart_delay_ms",
                   "maxDelayMs": "restart_max_delay_ms", "backoffMultiplier": "restart_backoff_multiplier",
                   "resetBackoffAfterMs": "restart_reset_backoff_after_ms",
                   "failureRateIntervalMs": "restart_failure_rate_interval_ms"}
        for value_key, toml_key in restart.items():
            g.eq(data.get(toml_key), v["restartStrategy"].get(value_key), f"jobmanager.toml: {toml_key}")
    else:
        g.eq(data.get("jobmanager_rpc"), f"http://{name}-jobmanager:6123", "taskmanager.toml: jobmanager_rpc")
        g.check("jobmanager" not in data, "taskmanager.toml: the deprecated key jobmanager (now jobmanager_rpc)")
        g.eq(data.get("slots"), v["slots"], "taskmanager.toml: slots")
        g.eq(data.get("rocksdb_memory_mb"), v["rocksdbMemoryMb"], "taskmanager.toml: rocksdb_memory_mb")
        g.check("id" not in data and "advertised_host" not in data,
                "taskmanager.toml must leave id and advertised_host to the pod's environment")
    for key, value in (v.get("config") or {}).items():
        g.eq(data.get(key), value, f"{spec['config']}: {key} (from {component}.config, applied last)")


def check_pod(g: Group, component: str, workload: dict[str, Any], objects: list[dict[str, Any]],
              values: dict[str, Any], name: str, config: dict[str, Any], configmap: dict[str, Any],
              raw_configmap: str) -> None:
    spec = COMPONENTS[component]
    v = values[component]
    what = f"{workload['kind']} {workload['metadata']['name']}"
    template = workload["spec"]["template"]
    pod = template["spec"]
    labels = template["metadata"].get("labels", {})
    annotations = template["metadata"].get("annotations", {})

    g.check(selects(workload["spec"]["selector"]["matchLabels"], labels), f"{what}: its selector does not select its pods")
    g.eq(labels.get("app.kubernetes.io/component"), component, f"{what}: pod label app.kubernetes.io/component")
    for key, value in v["podLabels"].items():
        g.eq(labels.get(key), value, f"{what}: pod label {key} (podLabels)")
    for key, value in v["podAnnotations"].items():
        g.eq(annotations.get(key), value, f"{what}: pod annotation {key} (podAnnotations)")

    # The config checksum rolls the pods when the configuration changes.
    g.eq(annotations.get("checksum/config"), hashlib.sha256(raw_configmap.encode()).hexdigest(),
         f"{what}: annotation checksum/config (sha256 of the rendered ConfigMap)")
    prometheus = {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec["probe_port"]), "prometheus.io/path": "/metrics"}
    for key, value in prometheus.items():
        g.eq(annotations.get(key), value if values["metrics"]["podAnnotations"] else None, f"{what}: annotation {key}")

    # Pod-level settings.
    sa = values["serviceAccount"]
    expected_sa = (sa["name"] or name) if sa["create"] else (sa["name"] or "default")
    g.eq(pod.get("serviceAccountName"), expected_sa, f"{what}: serviceAccountName")
    g.eq(pod.get("automountServiceAccountToken"), sa["automountServiceAccountToken"], f"{what}: automountServiceAccountToken")
    g.eq(pod.get("enableServiceLinks"), False, f"{what}: enableServiceLinks (service variables could collide with WEIR_<KEY>)")
    g.eq(pod.get("terminationGracePeriodSeconds"), v["terminationGracePeriodSeconds"], f"{what}: terminationGracePeriodSeconds")
    g.eq(pod.get("imagePullSecrets"), values["imagePullSecrets"] or None, f"{what}: imagePullSecrets")
    for key in ("nodeSelector", "affinity", "tolerations"):
        g.eq(pod.get(key), v[key] or None, f"{what}: {key}")
    psc = pod.get("securityContext", {})
    g.eq(psc.get("runAsNonRoot"), True, f"{what}: podSecurityContext.runAsNonRoot")
    g.check(psc.get("runAsUser") == UID and psc.get("runAsGroup") == UID and psc.get("fsGroup") == UID,
            f"{what}: podSecurityContext runAsUser/runAsGroup/fsGroup must be {UID} (the image's weir user), got {psc}")
    g.eq(psc.get("seccompProfile", {}).get("type"), "RuntimeDefault", f"{what}: seccompProfile")

    containers = pod["containers"]
    g.eq([c["name"] for c in containers], [component], f"{what}: containers")
    g.check(not pod.get("initContainers"), f"{what}: no init containers expected")
    c = containers[0]
    g.check("command" not in c, f"{what}: the container sets command; the image's ENTRYPOINT (tini) must stay PID 1")
    g.eq(c.get("args"), [component, "--config", f"{CONFIG_DIR}/{spec['config']}"], f"{what}: args")
    tag = values["image"]["tag"] or CHART_APP_VERSION
    g.eq(c.get("image"), f"{values['image']['repository']}:{tag}", f"{what}: image")
    g.eq(c.get("imagePullPolicy"), values["image"]["pullPolicy"], f"{what}: imagePullPolicy")
    csc = c.get("securityContext", {})
    g.eq(csc.get("allowPrivilegeEscalation"), False, f"{what}: allowPrivilegeEscalation")
    g.eq(csc.get("readOnlyRootFilesystem"), True, f"{what}: readOnlyRootFilesystem")
    g.check("ALL" in csc.get("capabilities", {}).get("drop", []), f"{what}: capabilities must drop ALL")
    g.check(not csc.get("privileged"), f"{what}: privileged")
    g.eq(c.get("resources"), v["resources"] or None, f"{what}: resources")

    # Ports, and the probes on them.
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    g.eq(ports, spec["ports"], f"{what}: container ports")

    def probe(kind: str, path: str, settings: dict[str, Any] | None) -> None:
        p = c.get(kind)
        if settings is None:
            g.check(p is None, f"{what}: {kind} expected absent")
            return
        if not g.check(p and "httpGet" in p, f"{what}: {kind} missing or not an HTTP probe"):
            return
        g.eq(p["httpGet"].get("path"), path, f"{what}: {kind} path")
        port = p["httpGet"].get("port")
        g.eq(ports.get(port, port), spec["probe_port"], f"{what}: {kind} port")
        for key, value in settings.items():
            if key != "enabled":
                g.eq(p.get(key), value, f"{what}: {kind}.{key}")

    probe("livenessProbe", "/healthz", v["livenessProbe"])
    probe("readinessProbe", "/readyz", v["readinessProbe"])
    probe("startupProbe", "/healthz", v["startupProbe"] if v["startupProbe"]["enabled"] else None)

    # Environment: the log filter, credentials from the Secret only, the taskmanager's identity.
    env = env_by_name(c)
    g.eq(len(env), len(c.get("env", [])), f"{what}: duplicate environment variables")
    g.eq(env.get("WEIR_LOG", {}).get("value"), values["logLevel"], f"{what}: WEIR_LOG")
    secret = values["storage"]["existingSecret"]
    keys = values["storage"]["existingSecretKeys"]
    for var, key in (("AWS_ACCESS_KEY_ID", keys["accessKeyId"]), ("AWS_SECRET_ACCESS_KEY", keys["secretAccessKey"])):
        if secret:
            ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef")
            g.eq(ref, {"name": secret, "key": key}, f"{what}: {var} from secretKeyRef")
        else:
            g.check(var not in env, f"{what}: {var} set without storage.existingSecret")
    for var, entry in env.items():
        if re.search(r"SECRET|PASSWORD|ACCESS_KEY|TOKEN", var):
            g.check("value" not in entry, f"{what}: {var} has an inline value; credentials come from Secrets")
    fields = rust_struct_fields(*spec["struct"])
    for var in env:
        if var.startswith("WEIR_") and var not in ("WEIR_LOG", "WEIR_CONFIG"):
            g.check(var[5:].lower() in fields, f"{what}: {var} overrides no key of {spec['struct'][1]}")
    if component == "taskmanager":
        g.eq(env.get("WEIR_ADVERTISED_HOST", {}).get("valueFrom"), {"fieldRef": {"fieldPath": "status.podIP"}},
             f"{what}: WEIR_ADVERTISED_HOST")
        g.eq(env.get("WEIR_ID", {}).get("valueFrom"), {"fieldRef": {"fieldPath": "metadata.name"}}, f"{what}: WEIR_ID")
    for extra in v["extraEnv"]:
        g.eq(env.get(extra["name"]), extra, f"{what}: extraEnv {extra['name']}")

    # Volumes: the ConfigMap read-only at /etc/weir, writable /tmp and /var/lib/weir, extras.
    volumes = {vol["name"]: vol for vol in pod.get("volumes", [])}
    claims = {t["metadata"]["name"]: t for t in workload["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    config_mount = mounts.get(CONFIG_DIR)
    if g.check(config_mount, f"{what}: nothing mounted at {CONFIG_DIR}"):
        g.eq(config_mount.get("readOnly"), True, f"{what}: {CONFIG_DIR} read-only")
        g.eq(volumes.get(config_mount["name"], {}).get("configMap", {}).get("name"), configmap["metadata"]["name"],
             f"{what}: the ConfigMap mounted at {CONFIG_DIR}")
    for path in ["/tmp", "/var/lib/weir"]:
        m = mounts.get(path)
        if g.check(m and not m.get("readOnly"), f"{what}: {path} must be a writable mount (read-only root filesystem)"):
            g.check(m["name"] in volumes or m["name"] in claims, f"{what}: mount {path} names no volume")
    for m in mounts.values():
        g.check(m["name"] in volumes or m["name"] in claims, f"{what}: mount {m['mountPath']} names no volume")
    for key in spec["writable_keys"]:
        path = config.get(key, "")
        g.check(any(under(path, p) and not m.get("readOnly") for p, m in mounts.items()),
                f"{what}: {key} = {path!r} is not on a writable volume")
    for extra in v["extraVolumes"]:
        g.eq(volumes.get(extra["name"]), extra, f"{what}: extraVolumes {extra['name']}")
    for extra in v["extraVolumeMounts"]:
        g.eq(mounts.get(extra["mountPath"]), extra, f"{what}: extraVolumeMounts {extra['mountPath']}")
    if component == "taskmanager":
        persistence = v["persistence"]
        if persistence["enabled"]:
            claim = claims.get("data")
            if g.check(claim and "data" not in volumes, f"{what}: persistence.enabled needs a volumeClaimTemplate `data` (and no emptyDir)"):
                g.eq(claim["spec"]["resources"]["requests"]["storage"], persistence["size"], f"{what}: volume size")
                g.eq(claim["spec"].get("storageClassName"), persistence["storageClass"] or None, f"{what}: storageClassName")
                g.eq(claim["spec"]["accessModes"], persistence["accessModes"], f"{what}: accessModes")
        else:
            g.check(not claims and "emptyDir" in volumes.get("data", {}), f"{what}: without persistence /var/lib/weir is an emptyDir")
    else:
        g.check("emptyDir" in volumes.get("data", {}), f"{what}: the jobmanager's /var/lib/weir is an emptyDir")


def check_render(g: Group, source: str, user_values: dict[str, Any], release: str, namespace: str,
                 facts: dict[str, Any]) -> None:
    report = helm_python.lint(CHART, user_values, strict=True, namespace=namespace)
    problems = [f"{m['path']}: {m['error'].strip()}" for m in report["messages"] if m["severity"] >= 2]
    g.check(not problems and not report["errors"], f"helm lint --strict: {problems or report['errors']}")

    with Chart.load(CHART) as chart:
        values = chart.merge_values(user_values)
    raw = render_raw(CHART, user_values, release, namespace)
    objects = [d["object"] for d in split_documents(raw)]
    version = k8s_validate(g, objects, source)
    g.notes.append(f"{len(objects)} objects valid for Kubernetes {version}")
    name = fullname(values, release)
    g.check(any(k.endswith("NOTES.txt") and "weir run --jobmanager" in t for k, t in raw.items()),
            "NOTES.txt does not explain `weir run --jobmanager`")

    kinds = sorted(o["kind"] for o in objects)
    expected_kinds = ["ConfigMap", "Deployment", "Service", "Service", "Service", "StatefulSet"]
    if values["serviceAccount"]["create"]:
        expected_kinds.append("ServiceAccount")
    if values["taskmanager"]["podDisruptionBudget"]["enabled"]:
        expected_kinds.append("PodDisruptionBudget")
    if values["rest"]["ingress"]["enabled"]:
        expected_kinds.append("Ingress")
    g.eq(kinds, sorted(expected_kinds), "kinds of the rendered objects (no Role/RoleBinding: no Kubernetes API access needed; no Secret)")
    for o in objects:
        labels = o["metadata"].get("labels", {})
        g.eq(labels.get("app.kubernetes.io/instance"), release, f"{o['kind']} {o['metadata']['name']}: instance label")
        g.check("namespace" not in o["metadata"], f"{o['kind']} {o['metadata']['name']}: names a namespace")

    # The configuration files, parsed as the processes parse them.
    configmap = one(g, objects, "ConfigMap", f"{name}-config")
    if configmap is None:
        return
    g.eq(sorted(configmap["data"]), ["jobmanager.toml", "taskmanager.toml"], "ConfigMap files")
    configs = {}
    for component, spec in COMPONENTS.items():
        text = configmap["data"][spec["config"]]
        try:
            configs[component] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            g.check(False, f"{spec['config']} is not valid TOML: {e}\n{text}")
            return
        check_config_file(g, component, configs[component], values, name)
    raw_configmap = next(t for k, t in raw.items() if k.endswith("/configmap.yaml"))

    # The workloads.
    pods = {}
    for component, spec in COMPONENTS.items():
        workload = one(g, objects, spec["kind"], f"{name}-{component}")
        if workload is None:
            return
        g.eq(workload["spec"]["replicas"], values[component]["replicas"], f"{spec['kind']}: replicas")
        check_pod(g, component, workload, objects, values, name, configs[component], configmap, raw_configmap)
        pods[component] = workload["spec"]["template"]["metadata"]["labels"]
    deployment = find(objects, "Deployment")[0]
    g.eq(deployment["spec"].get("strategy"), {"type": "Recreate"}, "Deployment: strategy")
    statefulset = find(objects, "StatefulSet")[0]
    g.eq(statefulset["spec"].get("podManagementPolicy"), "Parallel", "StatefulSet: podManagementPolicy")
    g.eq(statefulset["spec"].get("serviceName"), f"{name}-taskmanager", "StatefulSet: serviceName")

    # The Services route to the right pods and ports.
    def service(svc_name: str, component: str, ports: dict[str, int]) -> dict[str, Any] | None:
        svc = one(g, objects, "Service", svc_name)
        if svc is None:
            return None
        selector = svc["spec"].get("selector", {})
        g.check(selects(selector, pods[component]), f"Service {svc_name} does not select the {component} pods")
        other = "taskmanager" if component == "jobmanager" else "jobmanager"
        g.check(not selects(selector, pods[other]), f"Service {svc_name} also selects the {other} pods")
        container_ports = COMPONENTS[component]["ports"]
        g.eq({p["name"]: p["port"] for p in svc["spec"]["ports"]}, ports, f"Service {svc_name}: ports")
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            g.check(target in container_ports or target in container_ports.values(),
                    f"Service {svc_name}: targetPort {target!r} is no port of the {component} container")
        return svc

    jm = service(f"{name}-jobmanager", "jobmanager", {"rest": 8081, "rpc": 6123})
    if jm:
        g.eq(jm["spec"].get("type", "ClusterIP"), "ClusterIP", f"Service {name}-jobmanager: type")
        g.check(not jm["spec"].get("publishNotReadyAddresses"), "the jobmanager Service must route to ready (leading) pods only")
    # The taskmanagers' jobmanager URL is that Service's RPC port.
    url = re.fullmatch(r"http://([^:/]+):(\d+)", configs["taskmanager"].get("jobmanager_rpc", ""))
    g.check(url and url.group(1) == f"{name}-jobmanager" and int(url.group(2)) == 6123,
            f"taskmanager.toml's jobmanager_rpc {configs['taskmanager'].get('jobmanager_rpc')!r} is not the jobmanager Service's RPC port")
    rest_values = values["rest"]["service"]
    rest = service(f"{name}-rest", "jobmanager", {"rest": rest_values["port"]})
    if rest:
        g.eq(rest["spec"].get("type"), rest_values["type"], f"Service {name}-rest: type")
        g.eq(rest["spec"]["ports"][0].get("nodePort"),
             rest_values.get("nodePort") if rest_values["type"] != "ClusterIP" else None, f"Service {name}-rest: nodePort")
        g.eq(rest["spec"].get("loadBalancerSourceRanges"),
             (rest_values["loadBalancerSourceRanges"] or None) if rest_values["type"] == "LoadBalancer" else None,
             f"Service {name}-rest: loadBalancerSourceRanges")
        g.eq(rest["metadata"].get("annotations"), rest_values["annotations"] or None, f"Service {name}-rest: annotations")
    headless = service(f"{name}-taskmanager", "taskmanager", {"rpc": 6122, "data": 6121, "http": 9249})
    if headless:
        g.eq(headless["spec"].get("clusterIP"), "None", f"Service {name}-taskmanager: clusterIP (headless)")

    ingress_values = values["rest"]["ingress"]
    if ingress_values["enabled"]:
        ingress = one(g, objects, "Ingress", f"{name}-rest")
        if ingress:
            rules = ingress["spec"]["rules"]
            g.eq([r.get("host") for r in rules], ingress_values["hosts"], "Ingress: hosts")
            for rule in rules:
                for path in rule["http"]["paths"]:
                    g.eq(path["backend"]["service"], {"name": f"{name}-rest", "port": {"number": rest_values["port"]}},
                         "Ingress: backend")
            g.eq(ingress["spec"].get("tls"), ingress_values["tls"] or None, "Ingress: tls")
            g.eq(ingress["spec"].get("ingressClassName"), ingress_values["className"] or None, "Ingress: ingressClassName")

    pdb_values = values["taskmanager"]["podDisruptionBudget"]
    if pdb_values["enabled"]:
        pdb = one(g, objects, "PodDisruptionBudget", f"{name}-taskmanager")
        if pdb:
            g.eq(pdb["spec"].get("maxUnavailable"), pdb_values["maxUnavailable"], "PodDisruptionBudget: maxUnavailable")
            g.check(selects(pdb["spec"]["selector"]["matchLabels"], pods["taskmanager"])
                    and not selects(pdb["spec"]["selector"]["matchLabels"], pods["jobmanager"]),
                    "PodDisruptionBudget must select the taskmanager pods only")
    if values["serviceAccount"]["create"]:
        sa = one(g, objects, "ServiceAccount", values["serviceAccount"]["name"] or name)
        if sa:
            g.eq(sa.get("automountServiceAccountToken"), values["serviceAccount"]["automountServiceAccountToken"],
                 "ServiceAccount: automountServiceAccountToken")

    # Facts of this values file, written out by hand.
    for fact, expected in facts.items():
        if fact == "fullname":
            g.eq(name, expected, "fullname")
        elif fact == "jobmanagers":
            g.eq(deployment["spec"]["replicas"], expected, "jobmanager replicas")
        elif fact == "taskmanagers":
            g.eq(statefulset["spec"]["replicas"], expected, "taskmanager replicas")
        elif fact == "ha":
            g.check(f"high_availability = {'true' if expected else 'false'}" in configmap["data"]["jobmanager.toml"],
                    f"jobmanager.toml must say high_availability = {str(expected).lower()}")
        elif fact == "secret":
            container = statefulset["spec"]["template"]["spec"]["containers"][0]
            ref = env_by_name(container).get("AWS_SECRET_ACCESS_KEY", {}).get("valueFrom", {}).get("secretKeyRef", {})
            g.eq(ref.get("name"), expected, "AWS_SECRET_ACCESS_KEY's Secret")
        elif fact == "volumeClaim":
            g.eq(bool(statefulset["spec"].get("volumeClaimTemplates")), expected, "volumeClaimTemplates")
        elif fact == "restType":
            g.eq(rest["spec"]["type"] if rest else None, expected, "REST Service type")
        elif fact == "startupProbe":
            g.eq("startupProbe" in deployment["spec"]["template"]["spec"]["containers"][0], expected, "jobmanager startupProbe")
        else:
            raise ValueError(f"unknown fact {fact}")


# What each values file must produce, stated independently of the chart's templates.
RENDERS = [
    ("values-ha.yaml", "weir", "weir", {"fullname": "weir", "jobmanagers": 2, "taskmanagers": 2, "ha": True, "secret": "weir-s3",
                                        "volumeClaim": False, "restType": "ClusterIP", "startupProbe": False}),
    ("ci/default-values.yaml", "prod", "streaming", {"fullname": "prod-weir", "jobmanagers": 1, "taskmanagers": 1, "ha": False,
                                                     "volumeClaim": False, "restType": "ClusterIP"}),
    ("ci/ha-values.yaml", "weir-ha", "streaming", {"fullname": "weir-ha", "jobmanagers": 3, "taskmanagers": 4, "ha": True,
                                                   "secret": "minio-credentials", "startupProbe": True}),
    ("ci/persistence-ingress-values.yaml", "prod", "streaming", {"fullname": "prod-weir", "volumeClaim": True, "restType": "NodePort"}),
    ("ci/extras-values.yaml", "prod", "streaming", {"fullname": "analytics", "taskmanagers": 2, "restType": "LoadBalancer"}),
]


def check_values_files_covered(g: Group) -> None:
    listed = {source for source, *_ in RENDERS}
    present = {str(p.relative_to(CHART)) for p in CHART.glob("ci/*-values.yaml")} | {"values-ha.yaml"}
    g.eq(sorted(present - listed), [], "values files deploy_check.py does not render")
    g.eq(sorted(listed - present), [], "values files deploy_check.py expects but the chart lacks")


# --------------------------------------------------------------------------------------------
# Schema, guards, TOML


# Values whose names mention secrets or tokens but that hold none: names of Secrets, a switch.
NAMES_OF_SECRETS = {"storage.existingSecret", "storage.existingSecretKeys", "imagePullSecrets",
                    "rest.ingress.tls.secretName", "serviceAccount.automountServiceAccountToken"}


def check_chart_metadata(g: Group) -> None:
    import jsonschema

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    g.eq(chart.get("apiVersion"), "v2", "Chart.yaml apiVersion")
    g.eq(chart.get("appVersion"), workspace, "Chart.yaml appVersion (the workspace version in Cargo.toml)")
    schema = json.loads((CHART / "values.schema.json").read_text())
    g.eq(schema.get("$schema"), "http://json-schema.org/draft-07/schema#", "values.schema.json draft")
    jsonschema.Draft7Validator.check_schema(schema)
    g.eq(schema.get("additionalProperties"), False, "values.schema.json: additionalProperties at the top level")
    g.check("storage" in schema.get("required", []) and "url" in schema["properties"]["storage"].get("required", []),
            "values.schema.json must require storage.url")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    g.eq(sorted(defaults), sorted(schema["properties"]), "top-level keys of values.yaml vs values.schema.json")

    # No inline credentials anywhere in the schema (only the Secret's name and its key names).
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, child in node.get("properties", {}).items():
                here = f"{path}.{key}" if path else key
                if re.search(r"secret|password|token|access.?key|credential", key, re.I) and child is not False:
                    g.check(here in NAMES_OF_SECRETS or here.startswith("storage.existingSecretKeys."),
                            f"values.schema.json offers {here}: credentials only through storage.existingSecret")
                walk(child, here)
            for key in ("definitions", "allOf", "items", "additionalProperties"):
                if isinstance(node.get(key), dict):
                    for name, child in node[key].items() if key == "definitions" else [("", node[key])]:
                        walk(child, path)
    walk(schema, "")


# Each: values, then substrings the refusal must contain (the field it names).
NEGATIVE = [
    ("missing storage.url", {"storage": {"url": None}}, ["/storage", "url"]),
    ("no values (storage.url left empty)", {}, ["/storage/url"]),
    ("empty storage.url", {"storage": {"url": ""}}, ["/storage/url"]),
    ("storage.url of an unknown scheme", {"storage": {"url": "ftp://weir/x"}}, ["/storage/url"]),
    ("jobmanager.replicas 2 without high availability",
     {"storage": {"url": "s3://b/w"}, "jobmanager": {"replicas": 2}}, ["/jobmanager/replicas", "/highAvailability/enabled"]),
    ("taskmanager.slots 0", {"storage": {"url": "s3://b/w"}, "taskmanager": {"slots": 0}}, ["/taskmanager/slots"]),
    ("image.pullPolicy Sometimes", {"storage": {"url": "s3://b/w"}, "image": {"pullPolicy": "Sometimes"}}, ["/image/pullPolicy"]),
    ("unknown top-level key", {"storage": {"url": "s3://b/w"}, "replicaCount": 3}, ["replicaCount"]),
    ("inline credentials", {"storage": {"url": "s3://b/w", "accessKeyId": "AKIA0", "secretAccessKey": "x"}},
     ["/storage", "accessKeyId"]),
    ("inline credentials as a storage option", {"storage": {"url": "s3://b/w", "options": {"aws_secret_access_key": "x"}}},
     ["/storage/options/aws_secret_access_key"]),
    ("taskmanager.rocksdbMemoryMb 8", {"storage": {"url": "s3://b/w"}, "taskmanager": {"rocksdbMemoryMb": 8}},
     ["/taskmanager/rocksdbMemoryMb"]),
    ("a typo in a nested key", {"storage": {"url": "s3://b/w"}, "taskmanager": {"slot": 4}}, ["/taskmanager", "slot"]),
    ("replicas of the wrong type", {"storage": {"url": "s3://b/w"}, "taskmanager": {"replicas": "two"}}, ["/taskmanager/replicas"]),
    ("high availability on a file:// storage",
     {"storage": {"url": "file:///var/lib/weir/storage"}, "highAvailability": {"enabled": True}, "jobmanager": {"replicas": 2}},
     ["/storage/url"]),
    ("a table in jobmanager.config", {"storage": {"url": "s3://b/w"}, "jobmanager": {"config": {"storage_options": {"a": "b"}}}},
     ["/jobmanager/config/storage_options"]),
    ("rest.service.type Internal", {"storage": {"url": "s3://b/w"}, "rest": {"service": {"type": "Internal"}}},
     ["/rest/service/type"]),
]


def check_schema_negatives(g: Group) -> None:
    with Chart.load(CHART) as chart:
        for what, values, needles in NEGATIVE:
            try:
                chart.validate_schema(values)
                g.check(False, f"{what}: accepted by values.schema.json")
                continue
            except helm_python.HelmValuesError as e:
                message = str(e)
            g.check(all(n in message for n in needles), f"{what}: the refusal does not name {needles}: {message.strip()}")
            # helm install/template refuse it too (the same validation before rendering).
            try:
                chart.render(values, name="weir", namespace="default")
                g.check(False, f"{what}: rendered despite the schema")
            except helm_python.HelmValuesError:
                g.check(True, "")
        g.notes.append(f"{len(NEGATIVE)} bad values refused, each naming its field")


def check_template_guards(g: Group) -> None:
    """The templates' own `fail`s, behind the schema: rendered from a copy without the schema."""
    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = Path(tmp) / "weir"
        shutil.copytree(CHART, copy_dir)
        (copy_dir / "values.schema.json").unlink()
        cases = [
            ("replicas 2 without HA", {"storage": {"url": "s3://b/w"}, "jobmanager": {"replicas": 2}},
             ["jobmanager.replicas", "highAvailability.enabled"]),
            ("HA on file://", {"storage": {"url": "file:///x"}, "highAvailability": {"enabled": True}}, ["allowFileStorage"]),
            ("lease timing", {"storage": {"url": "s3://b/w"}, "highAvailability": {"renewDeadlineMs": 6000}},
             ["renewDeadlineMs", "leaseMs"]),
            ("no storage.url", {}, ["storage.url is required"]),
        ]
        with Chart.load(copy_dir) as chart:
            for what, values, needles in cases:
                try:
                    chart.render(values, name="weir", namespace="default")
                    g.check(False, f"{what}: rendered without the template's guard failing")
                except helm_python.HelmError as e:
                    g.check(all(n in str(e) for n in needles), f"{what}: the template's refusal does not name {needles}: {e}")
    # The longest release name Helm allows still gives valid names and labels.
    release = "r" * 49 + "-x12"
    objects = [d["object"] for d in split_documents(render_raw(CHART, {"storage": {"url": "s3://b/w"}}, release, "default"))]
    for o in objects:
        labels = {**o["metadata"].get("labels", {}), **o.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})}
        g.check(all(len(v) <= 63 for v in labels.values()), f"{o['kind']}: a label longer than 63 characters: {labels}")
        g.check(len(o["metadata"]["name"]) <= 63 - (11 if o["kind"] == "StatefulSet" else 0),
                f"{o['kind']} {o['metadata']['name']}: too long a name")
    # And what the guards allow: HA on a shared filesystem, explicitly.
    shared = {"storage": {"url": "file:///mnt/shared"}, "highAvailability": {"enabled": True, "allowFileStorage": True},
              "jobmanager": {"replicas": 2, "extraVolumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": "x"}}],
                             "extraVolumeMounts": [{"name": "shared", "mountPath": "/mnt/shared"}]}}
    objects = [d["object"] for d in split_documents(render_raw(CHART, shared, "weir", "default"))]
    g.eq(find(objects, "Deployment")[0]["spec"]["replicas"], 2, "HA on file:// with allowFileStorage")


def check_toml_rendering(g: Group) -> None:
    """Values that need quoting or are large reach the processes exactly."""
    tricky = 'a "quoted" \\ back\tslash <&> ü'
    values = {
        "storage": {"url": "s3://b/w", "options": {"aws_virtual_hosted_style_request": False, "tricky": tricky, "number": 9000}},
        "jobmanager": {"restartStrategy": {"type": "failure-rate", "attempts": 0, "resetBackoffAfterMs": 3600000,
                                           "backoffMultiplier": 2.5, "failureRateIntervalMs": 86400000},
                       "config": {"slot_request_timeout_ms": 1234567890, "restart_strategy": tricky}},
    }
    raw = render_raw(CHART, values, "weir", "default")
    cm = next(d["object"] for d in split_documents(raw) if d["object"]["kind"] == "ConfigMap")
    jm = tomllib.loads(cm["data"]["jobmanager.toml"])
    g.eq(jm["restart_strategy"], tricky, "a string needing escapes, from jobmanager.config, overriding restartStrategy.type")
    g.eq(jm["restart_attempts"], 0, "restart_attempts 0")
    g.eq(jm["restart_reset_backoff_after_ms"], 3600000, "a large integer (not 3.6e+06)")
    g.eq(jm["restart_failure_rate_interval_ms"], 86400000, "a larger integer")
    g.eq(jm["restart_backoff_multiplier"], 2.5, "a float")
    g.eq(jm["slot_request_timeout_ms"], 1234567890, "an integer from jobmanager.config")
    g.eq(jm["storage_options"], {"aws_virtual_hosted_style_request": "false", "tricky": tricky, "number": "9000"},
         "storage options are strings")
    tm = tomllib.loads(cm["data"]["taskmanager.toml"])
    g.eq(tm["storage_options"], jm["storage_options"], "the taskmanagers get the same storage options")

    # A change of configuration changes the checksum, so the pods roll.
    def checksum(v: dict[str, Any]) -> set[str]:
        objs = [d["object"] for d in split_documents(render_raw(CHART, v, "weir", "default"))]
        return {o["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
    base = {"storage": {"url": "s3://b/w"}}
    first, second = checksum(base), checksum({**base, "taskmanager": {"slots": 3}})
    g.check(len(first) == 1 and len(second) == 1 and first != second, f"the checksum must change with the config: {first} {second}")
    g.eq(checksum({**base, "taskmanager": {"replicas": 5}}), first, "the checksum must not change with the replicas")


# --------------------------------------------------------------------------------------------
# deploy/k8s


def check_k8s_manifests(g: Group) -> None:
    for problem in render_k8s_manifests.drift():
        g.check(False, problem)
    text = (ROOT / "deploy" / "k8s" / "weir.yaml").read_text()
    objects = [o for o in yaml.safe_load_all(text) if o]
    k8s_validate(g, objects, "deploy/k8s/weir.yaml")
    g.check(len(objects) >= 7, f"deploy/k8s/weir.yaml holds {len(objects)} objects")
    kustomization = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())
    g.eq(kustomization.get("resources"), ["weir.yaml"], "kustomization.yaml resources")
    g.check((ROOT / "deploy" / "k8s" / "README.md").exists(), "deploy/k8s/README.md missing")
    kubectl = shutil.which("kubectl")
    if not kubectl:
        g.notes.append("kubectl not installed: `kubectl kustomize` not tried")
        return
    built = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "k8s")], capture_output=True, text=True, timeout=120)
    if g.check(built.returncode == 0, f"kubectl kustomize deploy/k8s failed: {built.stderr.strip()}"):
        canonical = lambda objs: sorted(json.dumps(o, sort_keys=True) for o in objs)  # noqa: E731
        g.eq(canonical(o for o in yaml.safe_load_all(built.stdout) if o) == canonical(objects), True,
             "kubectl kustomize deploy/k8s builds exactly the objects of weir.yaml")
        g.notes.append("kubectl kustomize builds it")


# --------------------------------------------------------------------------------------------
# The image


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continuation
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current:
            keyword, _, rest = current.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        current = ""
    if current.strip():
        keyword, _, rest = current.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker's context rules (last matching pattern wins; a pattern matching a parent
    directory matches its contents) leave `path` out of the build context."""
    excluded = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        regex = re.escape(pattern.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def check_dockerfile(g: Group) -> None:
    text = (DOCKER / "Dockerfile").read_text()
    instructions = dockerfile_instructions(text)
    args = {}
    for keyword, rest in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
    substitute = lambda s: re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), s)  # noqa: E731

    stages: list[dict[str, Any]] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            words = rest.split()
            stages.append({"image": substitute(words[0]), "name": words[2] if len(words) > 2 and words[1].upper() == "AS" else None,
                           "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, rest))
        else:
            g.check(keyword in ("ARG",), f"{keyword} before the first FROM")
    if not g.check(len(stages) >= 2, f"the Dockerfile needs at least 2 stages (build, runtime), has {len(stages)}"):
        return
    build, final = stages[0], stages[-1]
    g.eq(build["image"], "rust:1-bookworm", "the build stage's base image")
    g.eq(final["image"], "debian:bookworm-slim", "the final stage's base image")
    build_runs = " ".join(rest for k, rest in build["instructions"] if k == "RUN")
    g.check("libclang-dev" in build_runs, "the build stage must install libclang-dev (bindgen for RocksDB)")
    for package in ("make", "perl", "zlib1g-dev"):
        g.check(re.search(rf"\b{re.escape(package)}\b", build_runs), f"the build stage must install {package} (vendored librdkafka)")
    cargo = re.search(r"cargo build ([^&;]*)", build_runs)
    if g.check(cargo, "no `cargo build` in the build stage"):
        flags = cargo.group(1).split()
        g.check("--release" in flags and "--locked" in flags, f"cargo build needs --release --locked: {cargo.group(0)}")
        packages = [flags[i + 1] for i, f in enumerate(flags) if f == "-p"]
        g.eq(sorted(packages), ["weir-cli", "weir-jobmanager", "weir-taskmanager"], "cargo build packages")
        # The packages and their binaries exist under these names.
        bins = {}
        for manifest in ROOT.glob("*/Cargo.toml"):
            crate = tomllib.loads(manifest.read_text())
            name = crate.get("package", {}).get("name")
            names = [b["name"] for b in crate.get("bin", [])]
            if (manifest.parent / "src" / "main.rs").exists() and not names:
                names = [name]
            bins[name] = names
        for package, binary in (("weir-jobmanager", "weir-jobmanager"), ("weir-taskmanager", "weir-taskmanager"), ("weir-cli", "weir")):
            g.check(binary in bins.get(package, []), f"package {package} has no binary {binary} ({bins.get(package)})")
    for target in ("/usr/local/cargo/registry", "/target"):
        g.check(re.search(rf"--mount=type=cache,[^ ]*target=[^ ]*{re.escape(target)}", build_runs),
                f"the build should use a BuildKit cache mount for {target}")

    final_runs = [rest for k, rest in final["instructions"] if k == "RUN"]
    apt = [r for r in final_runs if "apt-get install" in r]
    if g.check(len(apt) == 1, "the final stage needs one apt-get install"):
        g.check("--no-install-recommends" in apt[0], "apt-get install without --no-install-recommends")
        g.check("apt-get update" in apt[0] and "rm -rf /var/lib/apt/lists" in apt[0],
                "apt-get update, install and the removal of the lists belong in one RUN")
        installed = set(re.findall(r"install\s+(?:-\S+\s+)*([^&]*)", apt[0])[0].split())
        g.eq(installed, {"tini", "ca-certificates"}, "packages of the runtime image")
    users = [rest for k, rest in final["instructions"] if k == "USER"]
    if g.check(users, "the final stage sets no USER"):
        user = users[-1].split(":")
        g.check(all(p.isdigit() for p in user) and int(user[0]) != 0,
                f"USER must be numeric and non-root (Kubernetes' runAsNonRoot checks a number): {users[-1]}")
        g.eq(int(user[0]) if user[0].isdigit() else None, UID, "USER uid (the chart's runAsUser)")
    g.check(any(f"--uid {UID}" in r and f"--gid {UID}" in r for r in final_runs) and any(f"--gid {UID}" in r and "groupadd" in r for r in final_runs),
            f"the user weir must have uid and gid {UID}")
    g.check(any("/opt/weir/plugins" in r and "/var/lib/weir" in r and f"chown {UID}:{UID}" in r for r in final_runs),
            "/opt/weir/plugins and /var/lib/weir must exist and belong to the weir user")
    entrypoint = [rest for k, rest in final["instructions"] if k == "ENTRYPOINT"]
    if g.check(entrypoint, "no ENTRYPOINT"):
        g.eq(json.loads(entrypoint[-1]), ["/usr/bin/tini", "--", "/usr/local/bin/weir-entrypoint"], "ENTRYPOINT (exec form, tini first)")
    cmd = [rest for k, rest in final["instructions"] if k == "CMD"]
    g.check(cmd and json.loads(cmd[-1]) == ["--help"], f"CMD must be [\"--help\"]: {cmd}")
    copies = [rest for k, rest in final["instructions"] if k == "COPY"]
    binaries = [c for c in copies if c.startswith("--from=")]
    copied = " ".join(binaries)
    for binary in ("weir-jobmanager", "weir-taskmanager", "weir"):
        g.check(re.search(rf"/{re.escape(binary)}(\s|$)", copied), f"the final stage does not copy the binary {binary}")
    g.check(all(c.split()[-1] == "/usr/local/bin/" for c in binaries), f"the binaries go to /usr/local/bin/: {binaries}")
    g.check(any("deploy/docker/weir-entrypoint.sh" in c and c.split()[-1] == "/usr/local/bin/weir-entrypoint" for c in copies),
            "the entrypoint script must be copied to /usr/local/bin/weir-entrypoint")
    exposed = {int(p.split("/")[0]) for k, rest in final["instructions"] if k == "EXPOSE" for p in rest.split()}
    chart_ports = {p for spec in COMPONENTS.values() for p in spec["ports"].values()}
    g.eq(exposed, chart_ports, "EXPOSE vs the chart's container ports")
    for k, rest in final["instructions"]:
        if k == "ENV":
            g.check("WEIR_" not in rest, f"ENV {rest}: a WEIR_* variable in the image overrides the configuration files")
    labels = " ".join(rest for k, rest in final["instructions"] if k == "LABEL")
    for label in ("title", "description", "version", "source", "licenses"):
        g.check(f"org.opencontainers.image.{label}=" in labels, f"missing OCI label org.opencontainers.image.{label}")

    ignore = ROOT / ".dockerignore"
    if g.check(ignore.exists(), "no .dockerignore at the repository's root (the build context)"):
        patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
        for path in ("target/release/weir", "crate/target/x", ".git/HEAD"):
            g.check(dockerignore_excludes(patterns, path), f".dockerignore does not exclude {path}")
        members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
        for path in ["Cargo.toml", "Cargo.lock", "deploy/docker/weir-entrypoint.sh"] + [f"{m}/Cargo.toml" for m in members]:
            g.check(not dockerignore_excludes(patterns, path), f".dockerignore excludes {path}, which the build needs")


# Shared libraries debian:bookworm-slim provides without installing anything (glibc, libgcc-s1,
# libstdc++6 and zlib1g, all required by apt or dpkg).
BASE_IMAGE_LIBRARIES = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1", "ld-linux-x86-64.so.2",
                        "ld-linux-aarch64.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1"}


def check_binary_libraries(g: Group) -> None:
    """The shared libraries the built binaries need (from the last local build, if any) are all
    in the runtime image: a new one (say libssl) would need an apt package there."""
    readelf = shutil.which("readelf")
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "weir" / "target"))
    checked = []
    for binary in ("weir-jobmanager", "weir-taskmanager", "weir"):
        path = next((target / profile / binary for profile in ("release", "debug") if (target / profile / binary).exists()), None)
        if path is None or readelf is None:
            continue
        out = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True, timeout=60).stdout
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))
        g.check(needed, f"{path}: no NEEDED entries read")
        g.eq(sorted(needed - BASE_IMAGE_LIBRARIES), [], f"{path}: shared libraries debian:bookworm-slim lacks")
        checked.append(f"{path.parent.name}/{binary}")
    g.notes.append(f"checked {', '.join(checked)}" if checked else "no built binaries (or no readelf): skipped")


def check_entrypoint(g: Group) -> None:
    script = DOCKER / "weir-entrypoint.sh"
    text = script.read_text()
    g.eq(text.splitlines()[0], "#!/bin/sh", "shebang")
    g.check(re.search(r"^set -eu$", text, re.M), "the entrypoint must `set -eu`")
    g.check(script.stat().st_mode & stat.S_IXUSR, "the entrypoint is not executable")
    shells = []
    for shell in ("/bin/sh", shutil.which("dash"), shutil.which("bash")):  # bash: as `sh` on some bases
        if shell and os.path.exists(shell) and os.path.realpath(shell) not in map(os.path.realpath, shells):
            shells.append(shell)
    for shell in shells:
        syntax = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        g.check(syntax.returncode == 0, f"{shell} -n: {syntax.stderr.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        bin_dir = Path(tmp)
        fake = ('#!/bin/sh\n'
                'if [ -n "${FAKE_WAIT:-}" ]; then trap \'echo got-TERM; exit 0\' TERM; echo waiting; '
                'while :; do sleep 0.05; done; fi\n'
                'printf "%s\\n" "$(basename "$0")" "$$" "$@"\nexit "${FAKE_EXIT:-0}"\n')
        for name in ("weir-jobmanager", "weir-taskmanager", "weir", "some-tool"):
            (bin_dir / name).write_text(fake)
            (bin_dir / name).chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
        env.pop("FAKE_EXIT", None)
        env.pop("FAKE_WAIT", None)

        def run(argv: list[str], shell: str, **extra: str) -> tuple[int, list[str], int]:
            proc = subprocess.Popen([shell, str(script), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env={**env, **extra})
            out, err = proc.communicate(timeout=30)
            return proc.returncode, out.splitlines(), proc.pid

        cases = [
            (["jobmanager", "--config", "x"], "weir-jobmanager", ["--config", "x"]),
            (["jobmanager"], "weir-jobmanager", []),
            (["taskmanager", "--config", "/etc/weir/taskmanager.toml"], "weir-taskmanager", ["--config", "/etc/weir/taskmanager.toml"]),
            (["weir", "run", "--jobmanager", "http://weir-rest:8081", "job.so", "--", "a b", "*"], "weir",
             ["run", "--jobmanager", "http://weir-rest:8081", "job.so", "--", "a b", "*"]),
            (["cli", "list", "--json"], "weir", ["list", "--json"]),
            (["some-tool", "x", ""], "some-tool", ["x", ""]),
        ]
        for shell in shells:
            for argv, binary, rest in cases:
                code, lines, pid = run(argv, shell)
                g.eq(code, 0, f"{shell} entrypoint {argv}: exit status")
                g.eq(lines[:1], [binary], f"{shell} entrypoint {argv}: the program run")
                g.eq(lines[1:2], [str(pid)], f"{shell} entrypoint {argv}: pid of {binary} (exec keeps the entrypoint's pid)")
                g.eq(lines[2:], rest, f"{shell} entrypoint {argv}: arguments")
            for argv in (["--help"], ["help"], []):
                code, lines, _ = run(argv, shell)
                g.check(code == 0 and lines and "usage" in lines[0] and not any(l in ("weir", "weir-jobmanager") for l in lines),
                        f"{shell} entrypoint {argv}: must print the usage and exit 0, got {code} {lines}")
            code, _, _ = run(["taskmanager"], shell, FAKE_EXIT="3")
            g.eq(code, 3, f"{shell} entrypoint: the process's exit status passes through")
        # SIGTERM to the container's main process reaches the Weir process itself. (In a session
        # of its own, so that whatever a broken entrypoint leaves behind is killed at the end.)
        proc = subprocess.Popen([str(script), "jobmanager"], stdout=subprocess.PIPE, text=True,
                                env={**env, "FAKE_WAIT": "1"}, start_new_session=True)
        try:
            g.eq(proc.stdout.readline().strip(), "waiting", "the fake jobmanager started")
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=10)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                out, code = "", "no exit within 10 s"
            g.check(code == 0 and "got-TERM" in out, f"SIGTERM to the entrypoint's pid must reach weir-jobmanager: {code} {out!r}")
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def check_render_cli(g: Group) -> None:
    """scripts/render_chart.py, as the Rust chart-driven cluster test calls it."""
    command = [sys.executable, str(SCRIPTS / "render_chart.py"), str(CHART), "--values", str(CHART / "values-ha.yaml"),
               "--set-json", "taskmanager.replicas=3", "--set-json", 'storage.options={"aws_virtual_hosted_style_request":"false"}',
               "--name", "weir", "--namespace", "test"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if g.check(done.returncode == 0, f"render_chart.py failed: {done.stderr.strip()}"):
        objects = json.loads(done.stdout)
        g.check(isinstance(objects, list) and all("kind" in o for o in objects), "render_chart.py prints a JSON array of objects")
        g.eq([o["spec"]["replicas"] for o in objects if o["kind"] == "StatefulSet"], [3], "--set-json applied")
        cm = next(o for o in objects if o["kind"] == "ConfigMap")
        g.eq(tomllib.loads(cm["data"]["jobmanager.toml"]).get("storage_options", {}).get("aws_virtual_hosted_style_request"),
             "false", "--set-json of a map merged into the values file's")
    bad = subprocess.run(command[:3] + ["--set-json", 'storage={"url":""}'], capture_output=True, text=True, timeout=300)
    g.check(bad.returncode == 1 and "/storage/url" in bad.stderr, f"render_chart.py with bad values: {bad.returncode} {bad.stderr.strip()}")


# --------------------------------------------------------------------------------------------


with Chart.load(CHART) as _chart:
    CHART_APP_VERSION = _chart.metadata["appVersion"]


def main() -> int:
    started = time.monotonic()
    run_group("chart metadata and values.schema.json", check_chart_metadata)
    run_group("values files covered", check_values_files_covered)
    for source, release, namespace, facts in RENDERS:
        values = load_values([CHART / source])
        run_group(f"lint, render and validate {source} (release {release})",
                  lambda g, v=values, s=source, r=release, n=namespace, f=facts: check_render(g, s, v, r, n, f))
    run_group("schema rejects bad values", check_schema_negatives)
    run_group("template guards behind the schema", check_template_guards)
    run_group("TOML rendering and config checksum", check_toml_rendering)
    run_group("deploy/k8s matches a fresh render", check_k8s_manifests)
    run_group("Dockerfile and .dockerignore", check_dockerfile)
    run_group("binaries' shared libraries are in the runtime image", check_binary_libraries)
    run_group("entrypoint script", check_entrypoint)
    run_group("render_chart.py command line", check_render_cli)
    failed = [g for g in RESULTS if g.failures]
    elapsed = time.monotonic() - started
    if failed:
        print(f"\ndeploy_check: {len(failed)} of {len(RESULTS)} groups failed ({elapsed:.1f} s):")
        for g in failed:
            print(f"  {g.name}: {len(g.failures)} failure(s)")
        return 1
    print(f"deploy_check: all {len(RESULTS)} groups passed ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
