"""docker-compose.yml and every config it mounts: parsed, present and consistent.

There is no Docker engine here, so the checks are static: mounted files exist, the
addresses one service uses for another name a real service and a port that service
listens on, and the Prometheus config passes `promtool check config`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return data


def services() -> dict[str, Any]:
    result: dict[str, Any] = compose()["services"]
    return result


def mounts(service: str) -> dict[str, str]:
    """Container path -> source (host path for bind mounts, volume name otherwise)."""
    result = {}
    for volume in services()[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        result[target] = source
    return result


def bind_mount(service: str, target: str) -> Path:
    source = mounts(service)[target]
    assert source.startswith("./"), f"{service}: {target} is not a bind mount"
    return ROOT / source


def mounted_config(service: str, target: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(bind_mount(service, target).read_text("utf-8"))
    return data


def command(service: str) -> list[str]:
    cmd = services()[service].get("command", [])
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def flag(service: str, name: str) -> str:
    for arg in command(service):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{service} has no {name}")


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def listening_ports() -> dict[str, set[int]]:
    """What each service listens on, read from its own command line or config."""
    exstream = command("exstream")
    otel = mounted_config("otel-collector", "/etc/otelcol/config.yml")
    tempo = mounted_config("tempo", "/etc/tempo.yml")
    protocols = otel["receivers"]["otlp"]["protocols"]
    return {
        "exstream": {int(exstream[exstream.index("--port") + 1])},
        "prometheus": {9090},  # the image's default --web.listen-address
        "alertmanager": {9093},
        "grafana": {3000},
        "otel-collector": {
            port_of(protocols["grpc"]["endpoint"]),
            port_of(protocols["http"]["endpoint"]),
            port_of(otel["service"]["telemetry"]["metrics"]["address"]),
        },
        "tempo": {
            tempo["server"]["http_listen_port"],
            port_of(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]),
        },
    }


def assert_reaches(address: str) -> None:
    """`host:port` or a URL names a compose service and a port it listens on."""
    url = httpx.URL(address if "://" in address else f"tcp://{address}")
    ports = listening_ports()
    assert url.host in ports, f"{address}: no service {url.host}"
    assert url.port in ports[url.host], f"{address}: {url.host} listens on {ports[url.host]}"


def test_every_bind_mount_exists_and_every_volume_is_declared() -> None:
    declared = set(compose().get("volumes", {}))
    for name in services():
        for target, source in mounts(name).items():
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} -> {target} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_dependencies_and_published_ports_name_real_services() -> None:
    ports = listening_ports()
    assert set(services()) == set(ports)
    for name, service in services().items():
        for dependency in service.get("depends_on", []):
            assert dependency in services(), f"{name} depends on unknown {dependency}"
        for mapping in service.get("ports", []):
            container = int(str(mapping).rsplit(":", 1)[1])
            assert container in ports[name], f"{name} publishes {container}, not listened on"


def published(service: str) -> list[tuple[str | None, int]]:
    """(host address or None for every interface, container port) of each published port."""
    result = []
    for mapping in services()[service].get("ports", []):
        parts = str(mapping).split(":")
        result.append((parts[0] if len(parts) == 3 else None, int(parts[-1])))
    return result


def test_only_exstream_is_published_beyond_loopback_and_only_with_a_token() -> None:
    for name in services():
        if name != "exstream":
            for address, port in published(name):
                assert address == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    token = services()["exstream"]["environment"]["EXSTREAM_API_TOKEN"]
    # Compose refuses to start when the variable is unset or empty.
    assert re.fullmatch(r"\$\{EXSTREAM_API_TOKEN:\?[^}]+\}", token), token
    assert command("exstream")[command("exstream").index("--host") + 1] == "0.0.0.0"


def test_dockerfile_copies_what_exists_and_serves_the_exstream_port() -> None:
    assert services()["exstream"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert f"EXPOSE {next(iter(listening_ports()['exstream']))}" in dockerfile


def test_prometheus_config_scrapes_the_services_and_loads_the_rules(tmp_path: Path) -> None:
    config_path = flag("prometheus", "--config.file")
    config = mounted_config("prometheus", config_path)
    assert "--enable-feature=exemplar-storage" in command("prometheus")
    rules = mounts("prometheus")
    for rule_file in config["rule_files"]:
        assert rules.get(rule_file) == "./alerts/exstream.rules.yml", rule_file
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "exstream" in jobs  # ExstreamTargetDown selects up{job="exstream"}
    for job in jobs.values():
        for static in job["static_configs"]:
            for target in static["targets"]:
                if not target.startswith("localhost:"):
                    assert_reaches(target)
    for manager in config["alerting"]["alertmanagers"]:
        for static in manager["static_configs"]:
            for target in static["targets"]:
                assert_reaches(target)
    # promtool resolves rule_files: check a copy that points at the real file.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed")
    config["rule_files"] = [str(ROOT / "alerts" / "exstream.rules.yml")]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), "utf-8")
    done = subprocess.run(
        [promtool, "check", "config", str(copy)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_loads_the_tested_config() -> None:
    path = flag("alertmanager", "--config.file")
    assert mounts("alertmanager")[path] == "./alerts/alertmanager.yml"


def test_traces_flow_from_exstream_through_the_collector_to_tempo() -> None:
    environment = services()["exstream"]["environment"]
    assert_reaches(environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    otel = mounted_config("otel-collector", "/etc/otelcol/config.yml")
    http_port = port_of(otel["receivers"]["otlp"]["protocols"]["http"]["endpoint"])
    assert httpx.URL(environment["OTEL_EXPORTER_OTLP_ENDPOINT"]).port == http_port
    pipeline = otel["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline[kind]:
            assert name in otel[kind], f"pipeline uses undefined {kind[:-1]} {name}"
    for name in pipeline["exporters"]:
        endpoint = otel["exporters"][name]["endpoint"]
        assert endpoint.startswith("tempo:")
        assert_reaches(endpoint)


def test_grafana_is_provisioned_with_the_dashboards_and_datasources() -> None:
    grafana = mounts("grafana")
    provisioning = {t: s for t, s in grafana.items() if t.startswith("/etc/grafana/provisioning")}
    assert provisioning == {
        "/etc/grafana/provisioning/datasources": "./dashboards/provisioning/datasources",
        "/etc/grafana/provisioning/dashboards": "./dashboards/provisioning/dashboards",
    }
    provider = yaml.safe_load(
        (ROOT / "dashboards/provisioning/dashboards/exstream.yml").read_text("utf-8")
    )
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert grafana[dashboards_path] == "./dashboards"
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "dashboards" / Path(home).relative_to(dashboards_path)).is_file()
    datasources = yaml.safe_load(
        (ROOT / "dashboards/provisioning/datasources/datasources.yml").read_text("utf-8")
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    for datasource in datasources:
        assert_reaches(datasource["url"])
        for link in datasource.get("jsonData", {}).get("exemplarTraceIdDestinations", []):
            assert link["datasourceUid"] in uids
    assert {d["type"] for d in datasources} >= {"prometheus", "tempo"}
