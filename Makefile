# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCENE  ?= object
RES    ?= 100
# The demo's training budget in seconds (the CPU preset reaches its quality bar within it).
BUDGET ?= 480

.PHONY: install system-deps demo test lint bench clean

system-deps:
	@bash tools/install_system_deps.sh

$(STAMP): pyproject.toml tools/install_system_deps.sh
	@bash tools/install_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The pinned CPU build first: with it in place the range in pyproject.toml installs nothing more.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,viewer]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/raytrace datasets/scenes/$(SCENE).toml -o datasets/$(SCENE) --res $(RES)
	@echo
	@echo "Dataset written to datasets/$(SCENE)/ (transforms_*.json, train/ val/ test/ images, depth and normals)."

test: $(STAMP)
	$(BIN)/ruff check .
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/raytrace_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
