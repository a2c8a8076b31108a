#!/usr/bin/env bash
# The exstream stack without Docker: exstream (demo config), Prometheus and Alertmanager
# (Debian packages) on loopback, with the same rule and Alertmanager files as production,
# plus a webhook logger on 127.0.0.1:9095 that prints every notification.
# Ctrl-C stops everything. Ports: EXSTREAM_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
DATA=${STACK_DIR:-data/stack}
DEMO=${DEMO_DIR:-data/demo}
EXSTREAM_PORT=${EXSTREAM_PORT:-8410}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
WEBHOOK_PORT=9095 # alerts/alertmanager.yml sends its webhooks here
ALERTMANAGER_BIN=$(command -v prometheus-alertmanager || command -v alertmanager)

mkdir -p "$DATA"
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_http() { # url name log
	for _ in $(seq 1 120); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		sleep 0.5
	done
	echo "$2 did not start; see $3" >&2
	exit 1
}

cat >"$DATA/prometheus.yml" <<YAML
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $PWD/alerts/exstream.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$ALERTMANAGER_PORT"]
scrape_configs:
  - job_name: exstream
    static_configs:
      - targets: ["127.0.0.1:$EXSTREAM_PORT"]
YAML

"$BIN/python" - "$WEBHOOK_PORT" >"$DATA/webhook.log" 2>&1 <<'PY' &
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        for alert in body["alerts"]:
            print(self.path[1:], alert["status"], alert["labels"], flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
PY
pids+=($!)

"$BIN/exstream" demo "$DEMO" --host 127.0.0.1 --port "$EXSTREAM_PORT" --serve >"$DATA/exstream.log" 2>&1 &
pids+=($!)
"$ALERTMANAGER_BIN" --config.file=alerts/alertmanager.yml --storage.path="$DATA/alertmanager" \
	--web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" --cluster.listen-address= \
	>"$DATA/alertmanager.log" 2>&1 &
pids+=($!)
prometheus --config.file="$DATA/prometheus.yml" --storage.tsdb.path="$DATA/prometheus" \
	--web.listen-address="127.0.0.1:$PROMETHEUS_PORT" --enable-feature=exemplar-storage \
	>"$DATA/prometheus.log" 2>&1 &
pids+=($!)

wait_http "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" Alertmanager "$DATA/alertmanager.log"
wait_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" Prometheus "$DATA/prometheus.log"
wait_http "http://127.0.0.1:$EXSTREAM_PORT/healthz" exstream "$DATA/exstream.log"

cat <<TXT

exstream stack is up (logs in $DATA/):
  exstream      http://127.0.0.1:$EXSTREAM_PORT/api/channels   streams: /stream/1.ts
  metrics       http://127.0.0.1:$EXSTREAM_PORT/metrics
  Prometheus    http://127.0.0.1:$PROMETHEUS_PORT/alerts
  Alertmanager  http://127.0.0.1:$ALERTMANAGER_PORT/#/alerts
  webhooks      tail -f $DATA/webhook.log
Stall channel 1 to see ExstreamChannelStalled fire:
  kill -STOP \$(curl -s http://127.0.0.1:$EXSTREAM_PORT/api/channels/1 | $BIN/python -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
Ctrl-C stops everything.
TXT
wait -n "${pids[@]}"
echo "a process of the stack exited; see $DATA/*.log" >&2
