# turnout: `make demo` (the main job, embedded defaults) and `make test` (the whole suite).
# Both do every set-up step themselves: virtualenv, Python dependencies, NGINX.

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.turnout-installed
ENV     ?= staging
IMAGE   ?=

.PHONY: demo demo-keep demo-stop test test-fast lint crash-matrix soak bench nginx prometheus alertmanager install deploy-staging deploy-production status history plugins clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# NGINX from the system package manager when it is missing and we are root; otherwise say how.
nginx:
	@command -v nginx >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing NGINX (Debian package nginx-light)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; \
	  else echo "NGINX is missing: run 'sudo apt-get install nginx-light' (or your system's nginx package)"; exit 1; fi; }

demo: install nginx
	$(BIN)/turnout demo

demo-keep: install nginx
	$(BIN)/turnout demo --keep

demo-stop: install
	$(BIN)/turnout demo-stop

prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Prometheus (Debian package prometheus)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "Prometheus is missing: run 'sudo apt-get install prometheus'"; exit 1; fi; }

alertmanager:
	@command -v prometheus-alertmanager >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Alertmanager (Debian package prometheus-alertmanager)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null; \
	  else echo "Alertmanager is missing: run 'sudo apt-get install prometheus-alertmanager'"; exit 1; fi; }

test: install nginx prometheus alertmanager
	$(BIN)/python -m pytest -q

# Lint and types, configured in pyproject.toml. All three run, so one pass reports every problem.
# mypy checks turnout/, flows/, tasks/ and plugins/ under the names they install as (turnout.flows,
# ...): a tree of links in build/typecheck gives mypy that layout (it has no setuptools package-dir).
lint: install
	@rc=0; \
	$(BIN)/ruff check . || rc=1; \
	$(BIN)/ruff format --check --output-format concise . || rc=1; \
	rm -rf build/typecheck && mkdir -p build/typecheck/turnout; \
	cp -rs "$(CURDIR)/turnout/." build/typecheck/turnout/; \
	for d in flows tasks plugins; do ln -s "$(CURDIR)/$$d" build/typecheck/turnout/$$d; done; \
	(cd build/typecheck && "$(abspath $(BIN))/mypy" --config-file "$(CURDIR)/pyproject.toml" -p turnout) || rc=1; \
	exit $$rc

# every crash point of every flow (CI runs a subset); the table goes to docs/crash-matrix.md
crash-matrix: install nginx
	CRASH_MATRIX_REPORT=docs/crash-matrix.md $(BIN)/python -m pytest -q -m "crash_full or not crash_full" \
	  --basetemp="$$(mktemp -d -t turnout-crash-matrix-XXXXXX)" tests/test_crash_matrix.py

# 30 blue-green + 10 canaries under load: errors, outcomes, RSS/fds of long-lived parts, servers left
soak: install nginx
	$(BIN)/python bench/soak.py

bench: install nginx
	$(BIN)/python bench/switch_under_load.py
	$(BIN)/python bench/orchestration_overhead.py
	$(BIN)/python bench/cli_overhead.py
	$(BIN)/python bench/judge_power.py
	$(BIN)/python bench/canary_detection.py
	$(BIN)/python bench/rollback_time.py
	$(BIN)/python bench/backup_restore.py

# Operator targets: make deploy-staging IMAGE=demo:v2
deploy-staging: install
	@test -n "$(IMAGE)" || { echo "usage: make deploy-staging IMAGE=demo:v2"; exit 2; }
	$(BIN)/turnout blue-green --image "$(IMAGE)" --environment staging

deploy-production: install
	@test -n "$(IMAGE)" || { echo "usage: make deploy-production IMAGE=demo:v2"; exit 2; }
	$(BIN)/turnout blue-green --image "$(IMAGE)" --environment production

status: install
	$(BIN)/turnout status --environment $(ENV)

history: install
	$(BIN)/turnout history --environment $(ENV)

plugins: install
	$(BIN)/turnout plugins

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
