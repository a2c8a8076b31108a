"""Real nginx for tests: an http-context file from deploy/nginx/ (with loopback
addresses put in) inside a main configuration of its own, run as an ordinary process."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import processes

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def main_config(directory: Path, site: Path) -> Path:
    """nginx.conf in `directory` that includes `site`; every file nginx writes stays in
    `directory`."""
    temp = "".join(
        f"    {kind}_temp_path {directory / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = directory / "nginx.conf"
    # Run as root (a container, CI), nginx's workers would be `nobody`, which may not
    # enter the test's directories: they stay root's.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main.write_text(
        f"{user}pid {directory / 'nginx.pid'};\n"
        "worker_processes 1;\n"
        "worker_rlimit_nofile 8192;\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        f"    access_log {directory / 'access.log'};\n{temp}"
        f"    include {site};\n"
        "}\n",
        encoding="utf-8",
    )
    return main


@contextlib.contextmanager
def running(directory: Path, site: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with `site` until the block ends, once `ready_url` answers 200: its master."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed (make setup installs it)")
    main = main_config(directory, site)
    argv = [NGINX, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(main)]
    with processes.running(
        [*argv, "-g", "daemon off;"], directory / "nginx.log", ready_url=ready_url
    ) as master:
        yield master
