"""Real processes on loopback: exstream, Prometheus, Alertmanager and a webhook receiver.

Intervals are short (scrape and rule evaluation every second, stall timeout 2 s). The
rules are the real alerts/exstream.rules.yml; only Alertmanager's group timings and
webhook addresses are rewritten, in a copy made from alerts/alertmanager.yml.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests import polling
from tests.harness.network import free_port
from tests.harness.processes import log_tail, start, stop, wait_ready
from tests.harness.receiver import Receiver, receiving

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "exstream.rules.yml"
ALERTMANAGER_CONFIG = ROOT / "alerts" / "alertmanager.yml"
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

T = TypeVar("T")

# Spans need an SDK tracer provider, or the pool records no exemplars.
_EXSTREAM_MAIN = (
    "import sys\n"
    "from opentelemetry import trace\n"
    "from opentelemetry.sdk.trace import TracerProvider\n"
    "trace.set_tracer_provider(TracerProvider())\n"
    "from service.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def wait_for(
    check: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.2
) -> T:
    """`tests.polling.wait_for` for other processes: their errors mean "not yet"."""
    return polling.wait_for(
        check, timeout, what, interval, ignore=(httpx.HTTPError, OSError, KeyError, ValueError)
    )


@dataclass
class Webhook:
    """Alertmanager's webhook receiver: every notification body with its path."""

    receiver: Receiver

    @property
    def port(self) -> int:
        return int(self.receiver.url.rsplit(":", 1)[1])

    def notifications(self) -> list[tuple[str, dict[str, Any]]]:
        return [(path, json.loads(body or b"{}")) for path, body in self.receiver.posts()]

    def alerts(self, status: str, **labels: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (path, alert)
            for path, body in self.notifications()
            for alert in body.get("alerts", [])
            if alert["status"] == status
            and all(alert["labels"].get(k) == v for k, v in labels.items())
        ]


@pytest.fixture(scope="session")
def webhook() -> Iterator[Webhook]:
    with receiving() as receiver:
        yield Webhook(receiver)


def alertmanager_test_config(webhook_port: int) -> dict[str, Any]:
    """alerts/alertmanager.yml with second-long group timings and the test's webhook."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    for route in [config["route"], *config["route"].get("routes", [])]:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
    config["route"]["group_wait"] = "1s"
    config["route"]["group_interval"] = "1s"
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            path = httpx.URL(hook["url"]).path
            hook["url"] = f"http://127.0.0.1:{webhook_port}{path}"
    return config


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def tail(self) -> str:
        return log_tail(self.log)

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        wait_ready(self.proc, self.url + path, self.log, timeout)


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Iterator[Service]:
    if ALERTMANAGER is None:
        pytest.fail("Alertmanager is not installed (Debian: prometheus-alertmanager)")
    root = tmp_path_factory.mktemp("alertmanager")
    config = root / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_test_config(webhook.port)), encoding="utf-8")
    port = free_port()
    argv = [
        ALERTMANAGER,
        f"--config.file={config}",
        f"--storage.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    service = Service(
        start(argv, root / "log.txt", cwd=root), f"http://127.0.0.1:{port}", root / "log.txt"
    )
    try:
        service.wait_ready("/-/ready")
        yield service
    finally:
        stop(service.proc)


CHANNELS_TOML = """\
[server]
host = "127.0.0.1"
port = {port}
data_dir = "data"

[ffmpeg]
width = 320
height = 240
fps = 15
video_bitrate = 300000

[playout]
min_horizon = 3600

[health]
check_interval = 0.5
stall_timeout = 2
max_restarts = 2
restart_window = 30
cooldown = 4
backoff_initial = 0.1
backoff_max = 0.5

[[channels]]
number = 1
name = "Stall me"
media = ["media"]
mode = "always_on"

[[channels]]
number = 2
name = "Fail me"
media = ["media"]
mode = "always_on"

[[channels]]
number = 3
name = "Slate"
media = ["empty"]
mode = "always_on"
"""


@dataclass
class Stack:
    exstream: Service
    prometheus: Service
    alertmanager: Service
    webhook: Webhook
    started: float
    faults: set[str] = field(default_factory=set)

    def channel(self, number: int) -> dict[str, Any]:
        response = httpx.get(f"{self.exstream.url}/api/channels/{number}", timeout=5)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.prometheus.url}/api/v1/query", params={"query": expr}, timeout=10
        )
        body = response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def am_alerts(self, **filters: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.alertmanager.url}/api/v2/alerts", params=filters, timeout=5)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    clips: Callable[[int, float], list[Path]],
    alertmanager: Service,
    webhook: Webhook,
) -> Iterator[Stack]:
    if PROMETHEUS is None:
        pytest.fail("Prometheus is not installed (Debian: prometheus)")
    root = tmp_path_factory.mktemp("stack")
    media = root / "media"
    media.mkdir()
    for clip in clips(2, 8.0):
        shutil.copy(clip, media / clip.name)
    # Not media at all: the scan skips it (exstream_media_skipped_total).
    (media / "broken.mp4").write_bytes(b"not a video" * 100)
    (root / "empty").mkdir()
    port = free_port()
    (root / "channels.toml").write_text(CHANNELS_TOML.format(port=port), encoding="utf-8")
    argv = [sys.executable, "-c", _EXSTREAM_MAIN, "serve", "--config", "channels.toml"]
    exstream = Service(
        start(argv, root / "exstream.log", cwd=root),
        f"http://127.0.0.1:{port}",
        root / "exstream.log",
    )

    prom_port = free_port()
    prom_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [alertmanager.url.removeprefix("http://")]}]}
            ]
        },
        "scrape_configs": [
            {"job_name": "exstream", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(prom_config), encoding="utf-8")
    prom_argv = [
        PROMETHEUS,
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--enable-feature=exemplar-storage",
    ]
    prometheus = Service(
        start(prom_argv, root / "prometheus.log", cwd=root),
        f"http://127.0.0.1:{prom_port}",
        root / "prometheus.log",
    )
    try:
        exstream.wait_ready("/healthz")
        prometheus.wait_ready("/-/ready")
        result = Stack(exstream, prometheus, alertmanager, webhook, time.time())
        wait_for(lambda: result.query('up{job="exstream"} == 1'), "Prometheus scraping exstream")
        yield result
    finally:
        stop(prometheus.proc)
        stop(exstream.proc)
