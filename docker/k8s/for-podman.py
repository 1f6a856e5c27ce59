"""Rewrite Kubernetes manifests into what ``podman kube play`` (4.3) can play, for the local test.

podman plays Pods, Deployments and ConfigMaps; it has no StatefulSet, Service or Secret kinds. So:
StatefulSet -> Deployment (same pod template), Services dropped (the test reaches pods by name on
a podman network), Secrets dropped and each secretKeyRef replaced by the Secret's value, secret
volumes replaced by empty writable folders, and containerPort lists dropped (podman would publish them on
this machine's own addresses; in Kubernetes they only document the pod). Everything else (image,
command, ConfigMap files, env, probes) is played as written.

    python3 for-podman.py MANIFEST [--replicas N] [--suffix S] > podman.yaml

--suffix appends S to every Deployment and ConfigMap name (and the references to them), so two
test runs on one machine do not collide: pods are then <name>S-pod-<r>.
"""
from __future__ import annotations

import argparse
import sys

import yaml


def convert(docs: list[dict], replicas: int | None, suffix: str = "") -> list[dict]:
    maps = {d["metadata"]["name"] for d in docs if d.get("kind") == "ConfigMap"}
    secrets = {d["metadata"]["name"]: {**(d.get("stringData") or {})} for d in docs if d.get("kind") == "Secret"}
    out = []
    for d in docs:
        kind = d.get("kind")
        if kind in ("Secret", "Service"):
            continue
        if kind == "StatefulSet":
            d["kind"] = "Deployment"
            for k in ("serviceName", "podManagementPolicy", "volumeClaimTemplates"):
                d["spec"].pop(k, None)
        if kind in ("ConfigMap", "StatefulSet", "Deployment"):
            d["metadata"]["name"] += suffix
        if kind in ("StatefulSet", "Deployment"):
            if replicas is not None:
                d["spec"]["replicas"] = replicas
            pod = d["spec"]["template"]["spec"]
            emptied = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
            for c in pod.get("containers", []):
                c.pop("ports", None)
                for vm in c.get("volumeMounts", []):
                    if vm["name"] in emptied:
                        vm.pop("readOnly", None)      # an empty folder the pod may fill (the broker's PKI)
                for e in c.get("env", []):
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        e.pop("valueFrom")
                        e["value"] = secrets[ref["name"]][ref["key"]]
            for v in pod.get("volumes", []):
                if "configMap" in v and v["configMap"].get("name") in maps:
                    v["configMap"]["name"] += suffix
                if "secret" in v:
                    v.pop("secret")
                    v["emptyDir"] = {}
        out.append(d)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("--replicas", type=int)
    ap.add_argument("--suffix", default="")
    a = ap.parse_args()
    with open(a.manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    yaml.safe_dump_all(convert(docs, a.replicas, a.suffix), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
