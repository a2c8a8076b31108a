"""The Kubernetes manifests (deploy/kubernetes) checked against one another, the service's
configuration and the front door: names, ports, probes, mounts and scrape annotations."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
FRONT_DOOR = ROOT / "deploy" / "nginx" / "frontdoor.conf"


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text("utf-8"))
    found: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        found += [d for d in yaml.safe_load_all((MANIFESTS / name).read_text("utf-8")) if d]
    return found


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def statefulset() -> dict[str, Any]:
    return one("StatefulSet", "exstream")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = only
    return found


def config_path() -> Path:
    args = container(statefulset())["args"]
    return Path(args[args.index("--config") + 1])


def settings(instance: str = "exstream-0") -> Settings:
    text = one("ConfigMap", "exstream-config")["data"][config_path().name]
    environ = {"EXSTREAM_INSTANCE": instance}
    return parse_settings(tomllib.loads(text), config_path(), environ)


def port_named(workload: dict[str, Any], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container(workload)["ports"]}
    return int(ports[name])


def test_every_manifest_parses_and_lives_in_one_namespace() -> None:
    names = {d["metadata"].get("namespace") for d in documents() if d["kind"] != "Namespace"}
    assert names == {one("Namespace", "exstream")["metadata"]["name"]}


def test_the_statefulset_runs_as_many_pods_as_the_cluster_has_members() -> None:
    workload = statefulset()
    replicas = workload["spec"]["replicas"]
    for ordinal in range(replicas):
        cluster = settings(f"exstream-{ordinal}").cluster
        assert cluster.instances == replicas
        assert cluster.members == tuple(
            f"{workload['metadata']['name']}-{i}" for i in range(replicas)
        )
    env = {e["name"]: e for e in container(workload)["env"]}
    assert env["EXSTREAM_INSTANCE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert workload["spec"]["podManagementPolicy"] == "Parallel"


def test_peers_are_the_pods_names_under_the_governing_headless_service() -> None:
    workload = statefulset()
    service = one("Service", workload["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    namespace = workload["metadata"]["namespace"]
    port = port_named(workload, "http")
    cluster = settings().cluster
    assert cluster.peers == tuple(
        f"http://{m}.{service['metadata']['name']}.{namespace}.svc.cluster.local:{port}"
        for m in cluster.members
    )
    assert settings().server.port == port


def test_probes_and_scrape_annotations_point_at_the_service() -> None:
    workload = statefulset()
    probes = container(workload)
    assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert probes["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port_named(workload, "http")
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize(
    ("workload", "volume", "configmap", "path"),
    [
        (("StatefulSet", "exstream"), "config", "exstream-config", "/etc/exstream"),
        (
            ("Deployment", "exstream-frontdoor"),
            "frontdoor",
            "exstream-frontdoor",
            "/etc/nginx/conf.d",
        ),
    ],
)
def test_configmaps_are_mounted_where_they_are_read(
    workload: tuple[str, str], volume: str, configmap: str, path: str
) -> None:
    spec = one(*workload)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[volume]["configMap"]["name"] == configmap
    (mount,) = [m for m in container(one(*workload))["volumeMounts"] if m["name"] == volume]
    assert mount["mountPath"] == path
    assert set(one("ConfigMap", configmap)["data"]) <= {config_path().name, "frontdoor.conf"}
    if workload[0] == "StatefulSet":
        assert config_path().parent == Path(path)


def test_the_data_directory_is_a_volume_of_each_pod() -> None:
    workload = statefulset()
    claims = {c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
    assert mounts[str(settings().server.data_dir)] in claims


def test_the_front_door_is_the_file_and_names_the_services_and_pods() -> None:
    conf = one("ConfigMap", "exstream-frontdoor")["data"]["frontdoor.conf"]
    assert conf == FRONT_DOOR.read_text("utf-8")
    workload = statefulset()
    namespace = workload["metadata"]["namespace"]
    port = port_named(workload, "http")
    (upstream,) = re.findall(r"upstream exstream_any \{\s*server ([^ ;]+)", conf)
    any_service = one("Service", "exstream-any")
    assert upstream == f"{any_service['metadata']['name']}.{namespace}.svc.cluster.local:{port}"
    assert any_service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
    assert "clusterIP" not in any_service["spec"]  # load-balanced over the ready pods
    # Owners are the pods' names, resolved at request time.
    assert all(p.startswith("http://exstream-") for p in settings().cluster.peers)
    assert re.search(r"^resolver \S+ valid=", conf, re.M)
    listen = int(re.findall(r"listen (\d+);", conf)[0])
    assert port_named(one("Deployment", "exstream-frontdoor"), "http") == listen
    service = one("Service", "exstream-frontdoor")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert settings().server.public_url
