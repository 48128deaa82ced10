# Two commands: `make demo` and `make test`. Each builds .venv from nothing when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ztid-installed

.PHONY: demo test bench venv clean proto

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,torch]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/ztid demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	@# The sidecar bench drives gRPC with h2load (Debian's nghttp2-client) when it can; else a Python client.
	@command -v h2load >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -qq nghttp2-client >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nghttp2-client >/dev/null 2>&1)); } || \
	  echo "h2load not available: the sidecar bench falls back to its Python load generator"
	$(BIN)/python -m bench

proto: $(STAMP)
	$(BIN)/python -m ztid._proto.build

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
