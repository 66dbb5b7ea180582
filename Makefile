# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCENE  ?= object
RES    ?= 100
# The demo's training: the CPU preset's steps, within a budget in seconds (it reaches its quality bar within both;
# under a budget alone it would train the whole budget, for no better views of this scene: bench/RESULTS.md).
STEPS  ?= 3000
BUDGET ?= 360

.PHONY: install system-deps native cuda-check demo test lint bench clean

system-deps:
	@bash tools/install_system_deps.sh

$(STAMP): pyproject.toml tools/install_system_deps.sh
	@bash tools/install_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The pinned CPU build first: with it in place the range in pyproject.toml installs nothing more, and the
	# native kernels that pip builds next (tools/nerfkit_build.py) are built against it.
	$(BIN)/pip install --quiet torch==2.13.0
	NERFKIT_REQUIRE_NATIVE=1 $(BIN)/pip install --quiet -e '.[dev,viewer,capture]'
	touch $(STAMP)

install: $(STAMP)

# The native kernels rebuilt after a change to their sources, by the same pip install (CMake in build/native/):
# raytrace/_native/ and nerf/_native/ (CUDA too where torch has CUDA and nvcc is found). A missing compiler fails here.
native: $(STAMP)
	NERFKIT_REQUIRE_NATIVE=1 nice $(BIN)/pip install --quiet --no-deps -e .

# Compiles the CUDA sources with nvcc alone (no GPU, no CUDA torch needed), so a CUDA compile error fails here.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
cuda-check: $(STAMP)
	@if [ -z "$(NVCC)" ]; then echo "cuda-check: no nvcc found, skipped"; else \
		nice cmake -S . -B build/cuda-check -DPython_EXECUTABLE=$(abspath $(BIN)/python) \
			-DNERF_CUDA_CHECK=ON -DCMAKE_CUDA_COMPILER=$(NVCC) && \
		nice cmake --build build/cuda-check --target nerf_cuda_check; fi

demo: $(STAMP) native
	$(BIN)/raytrace datasets/scenes/$(SCENE).toml -o datasets/$(SCENE) --res $(RES)
	$(BIN)/nerf-train datasets/$(SCENE) --steps $(STEPS) --time-budget $(BUDGET)
	@run=$$(ls -td runs/$(SCENE)/*/ | head -1); echo; \
	echo "Done. Look at:"; \
	echo "  datasets/$(SCENE)/          the raytraced dataset (train/ val/ test/: RGBA PNGs, 16-bit depth PNGs, ray distance .npz)"; \
	echo "  $${run}metrics.json   test PSNR / SSIM / depth error"; \
	echo "  $${run}renders/       ground truth | NeRF | NeRF depth | true depth, per test view"; \
	echo "  $${run}turntable.mp4  a novel-view video"; \
	echo "  tensorboard --logdir runs   training curves"

# NERFKIT_REQUIRE_NATIVE=1: the native tests fail, not skip, where the kernels are missing (CUDA ones skip without a GPU).
test: $(STAMP) native cuda-check
	$(BIN)/ruff check .
	NERFKIT_REQUIRE_NATIVE=1 QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/raytrace_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache nerf/_native raytrace/_native
