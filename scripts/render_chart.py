#!/usr/bin/env python3
"""Renders a Helm chart offline (Helm's own engine through helm-python-sdk, no cluster) and prints
the rendered Kubernetes objects as a JSON array on stdout, in Helm's install order.

    render_chart.py CHART_DIR [--values FILE]... [--set-json KEY=JSON]... [--name NAME] [--namespace NS]

Values are composed as `helm template` does: the chart's values.yaml, then each --values file in
order, then each --set-json (maps merge, everything else replaces); the chart's
values.schema.json is enforced. Exit status 1 with Helm's message on stderr when the values are
refused or a template fails. Needs the venv of scripts/setup.sh (helm-python-sdk, PyYAML).

Also the library of scripts/render_k8s_manifests.py and scripts/deploy_check.py.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

# Helm's install order of kinds (pkg/release/util/kind_sorter.go); other kinds go last.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
    "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
    "PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
    "ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding",
    "RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]

_DOCUMENT_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values sources: maps merge recursively, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_values(files: list[str | Path] = (), set_json: list[str] = ()) -> dict[str, Any]:
    """The user-supplied values of `helm template -f FILE... --set-json KEY=JSON...`."""
    import helm_python

    values: dict[str, Any] = {}
    for file in files:
        parsed = helm_python.values_from_yaml(Path(file).read_text()) or {}
        values = merge_values(values, parsed)
    for expression in set_json:
        values = merge_values(values, helm_python.parse_set_json(expression))
    return values


def render_raw(chart_dir: str | Path, values: dict[str, Any], name: str, namespace: str) -> dict[str, str]:
    """The chart's rendered templates as Helm's engine returns them: template path -> text."""
    from helm_python import Chart

    with Chart.load(chart_dir) as chart:
        return chart.render(values, name=name, namespace=namespace)


def split_documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The YAML documents of rendered templates: `{"source", "position", "text", "object"}` each,
    NOTES.txt and empty documents left out, in Helm's install order (by kind, then template, then
    position in the template)."""
    documents = []
    for source in sorted(rendered):
        if source.endswith("NOTES.txt") or not source.endswith((".yaml", ".yml", ".json")):
            continue
        for position, text in enumerate(_DOCUMENT_SEPARATOR.split(rendered[source])):
            obj = yaml.safe_load(text)
            if obj is None:
                continue
            if not isinstance(obj, dict) or "kind" not in obj:
                raise ValueError(f"{source}: document {position} is not a Kubernetes object")
            documents.append({"source": source, "position": position, "text": text.strip("\n") + "\n", "object": obj})

    def order(doc: dict[str, Any]) -> tuple[int, str, int]:
        kind = doc["object"]["kind"]
        rank = INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
        return rank, doc["source"], doc["position"]

    return sorted(documents, key=order)


def render_documents(chart_dir: str | Path, values: dict[str, Any], name: str, namespace: str) -> list[dict[str, Any]]:
    """The rendered YAML documents of the chart (see split_documents)."""
    return split_documents(render_raw(chart_dir, values, name, namespace))


def render_objects(chart_dir: str | Path, values: dict[str, Any], name: str, namespace: str) -> list[dict[str, Any]]:
    """The rendered Kubernetes objects, in Helm's install order."""
    return [doc["object"] for doc in render_documents(chart_dir, values, name, namespace)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chart_dir", metavar="CHART_DIR")
    parser.add_argument("--values", "-f", action="append", default=[], metavar="FILE", help="a values file (repeatable)")
    parser.add_argument("--set-json", action="append", default=[], metavar="KEY=JSON", help="a value as JSON (repeatable)")
    parser.add_argument("--name", default="weir", help="the release name (default weir)")
    parser.add_argument("--namespace", default="default", help="the release namespace (default default)")
    args = parser.parse_args(argv)
    try:
        import helm_python
    except ImportError as e:
        print(f"render_chart.py: {e}: run it with the venv's python that scripts/setup.sh prepares", file=sys.stderr)
        return 2
    try:
        values = load_values(args.values, args.set_json)
        objects = render_objects(args.chart_dir, values, args.name, args.namespace)
    except (helm_python.HelmError, OSError, ValueError) as e:
        print(f"render_chart.py: {str(e).strip()}", file=sys.stderr)
        return 1
    json.dump(objects, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
