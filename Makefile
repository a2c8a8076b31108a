# exstream: `make run` (demo) and `make test` (every check) do all set-up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_TOOLS := ffmpeg ffprobe prometheus promtool prometheus-alertmanager amtool tv_validate_file hdhomerun_config chromium chromedriver nginx
DEMO_DIR ?= data/demo
HOST ?= 127.0.0.1
PORT ?= 8410

.PHONY: run test setup system-deps venv lint typecheck unit alerts stack bench clean

run: setup
	$(BIN)/exstream demo $(DEMO_DIR) --host $(HOST) --port $(PORT) --serve

test: setup lint typecheck alerts unit

setup: system-deps venv

system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			ffmpeg prometheus prometheus-alertmanager xmltv-util hdhomerun-config chromium chromium-driver nginx >/dev/null; \
	fi

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv >/dev/null && \
		$(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

lint:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

alerts:
	@if [ -f alerts/exstream.rules.yml ]; then \
		promtool check rules alerts/exstream.rules.yml && \
		promtool test rules alerts/tests/*.yml && \
		amtool check-config alerts/alertmanager.yml; \
	fi

# Most end-to-end tests wait on real time (streams, restarts, scrapes): three workers
# overlap those waits. A module's tests stay on one worker (they share its servers).
TEST_WORKERS ?= 3

unit:
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

stack: setup
	scripts/stack.sh

bench: setup
	$(BIN)/python -m bench.fanout --viewers 200,500 --seconds 5 --rounds 1
	$(BIN)/python -m bench.hls --clients 50,100 --seconds 10
	$(BIN)/python -m bench.coldstart --runs 5
	$(BIN)/python -m bench.storm --channels 50
	$(BIN)/python -m bench.continuity --minutes 2

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis data
