# Two commands for a newcomer: `make run` (the demo) and `make test` (ruff + pytest).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint venv clean bench chromium wrk

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[torch,dev]'
	touch $(STAMP)

venv: $(STAMP)

# The service at http://127.0.0.1:8000 with a demo job preloaded on first start.
run: $(STAMP)
	$(BIN)/prunescope serve

# The same path without a server: train digits-cnn, sweep, print the table and the CSV path.
demo: $(STAMP)
	$(BIN)/prunescope demo

# Browser tests drive Debian's chromium (Playwright cannot download its own browser here).
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || echo "chromium missing: browser tests will be skipped (apt-get install chromium)"

# bench/api.py's load generator (C); without it the bench falls back to a Python generator of its own.
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -q wrk >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null)); } || echo "wrk missing: bench/api.py uses its Python generator (apt-get install wrk)"

# The suite in two phases: everything but the `timing` tests on TEST_WORKERS processes (pytest-xdist, whole
# files per worker, so a module's live server starts once), then the `timing` tests alone, since they promise
# answers within a time bound that two workers sharing the cores would break. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q

test: $(STAMP) chromium
	$(BIN)/ruff check .
ifeq ($(TEST_WORKERS),0)
	$(PYTEST) --durations=30
else
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile -m "not timing" --durations=30
	$(PYTEST) -m timing --durations=10
endif

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/sensitivity.py

clean:
	rm -rf $(VENV) prunescope-data
