# The two quick-start commands (README) and what they stand on.
#   make demo   install musicgen_edu, generate first.wav with edu-tiny (offline, shipped)
#   make test   install the dev extras, run every test (unit tier + notebook tier in two
#               processes, then the serial tests alone, the CPU kernels as built without
#               AVX-512, test-min and test-audiocraft)
#   make docs   run the lectures for the site (docs-run), then build it into site/ (strict:
#               warnings are errors); docs-serve previews it
#   make test-min  the lowest declared versions in their own venv (.venv-min), on the tests that
#               touch them (the last step of make test)
PYTHON ?= python3
# Installed only when no torch is importable: a local CPU wheel on our machines. On Colab
# (torch present) nothing is replaced. Override e.g. TORCH_SPEC="torch --index-url ...".
TORCH_SPEC ?= torch==2.13.0
PIP = $(PYTHON) -m pip install --quiet --disable-pip-version-check
SITE_DIR ?= site
# mkdocs-material prints a banner about its end of life on every build; keep the log to warnings
export NO_MKDOCS_2_WARNING = 1

.PHONY: install install-dev install-docs demo lint test test-unit test-avx2 test-min test-audiocraft test-notebooks test-browser screenshot docs docs-run docs-serve

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) $(TORCH_SPEC)
	$(PIP) -e .

install-dev:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) $(TORCH_SPEC)
	$(PIP) -e ".[dev]"

install-docs:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) $(TORCH_SPEC)
	$(PIP) -e ".[docs]"

demo: install
	$(PYTHON) -m musicgen_edu generate "slow piano chords in C major, low register, with drums" --model edu-tiny --duration 8 --seed 0 --output first.wav --overwrite

test-unit:
	$(PYTHON) -m pytest tests -q --ignore=tests/test_notebooks.py

test-notebooks:
	$(PYTHON) -m pytest -q notebooks --nbval-lax tests/test_notebooks.py

# lecture 07 in JupyterLab in headless Chromium (apt-get install chromium chromium-driver)
test-browser:
	$(PYTHON) -m pytest -q -m browser tests/test_studio_browser.py tests/test_serve_web.py

# the same tests, also writing docs/images/studio.png and web.png (the pictures on the docs site)
screenshot:
	MUSICGEN_UPDATE_SCREENSHOT=1 $(PYTHON) -m pytest -q -m browser tests/test_studio_browser.py \
	  tests/test_serve_web.py

# our C++ kernels once more as a CPU without AVX-512 builds them (8-float vectors: most
# students' laptops); on an AVX-512 machine that is another build, elsewhere the same again
# (only where the CPU has AVX2: torch would run its AVX2 kernels on any CPU it is told to)
test-avx2:
	@if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then \
	  ATEN_CPU_CAPABILITY=avx2 $(PYTHON) -m pytest -q -m "not arm" tests/test_thin.py; \
	else echo "test-avx2: this CPU has no AVX2, skipped"; fi

# the same kernels built for ARM (AArch64 NEON) and checked under qemu: tests/arm/run.sh
# (sudo apt-get install g++-aarch64-linux-gnu qemu-user; runs as root for a mount namespace)
test-arm:
	$(PYTHON) -m pytest -q -m arm tests/test_thin.py

# ruff (pyflakes, pycodestyle, isort, bugbear, pyupgrade; pyproject [tool.ruff]) and mypy on
# the typed core (pyproject [tool.mypy]: backends, generator, sampling, serve)
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

# DURATIONS: how many of the slowest tests to list (0: every test over a second)
DURATIONS ?= 15
# The main tier in WORKERS pytest processes (pytest-xdist; a test file stays on one), each with
# one torch thread, so that they share the cores instead of fighting over them; then, alone
# and with every thread, the tests marked serial: timing claims, signals, threaded kernels.
WORKERS ?= 2
test: install-dev
	@$(MAKE) --no-print-directory lint PYTHON="$(PYTHON)"
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n $(WORKERS) --dist loadfile -m "not serial" \
	  --durations=$(DURATIONS) --durations-min=1 tests notebooks --nbval-lax
	$(PYTHON) -m pytest -q -m serial --durations=$(DURATIONS) --durations-min=1 tests
	@$(MAKE) --no-print-directory test-avx2 PYTHON="$(PYTHON)"
	@$(MAKE) --no-print-directory test-min PYTHON="$(PYTHON)"
	@$(MAKE) --no-print-directory test-audiocraft PYTHON="$(PYTHON)"

# audiocraft in its own venv (.venv-audiocraft), so the main install never pulls it: torch as
# above, this package, then `musicgen-edu install-audiocraft` (audiocraft 1.3.0 beside that
# torch, never replacing it); then the tests that need it: the audiocraft backend against
# transformers and native, audiocraft's loaders on converted checkpoints
AC_VENV ?= .venv-audiocraft
test-audiocraft:
	@test -x $(AC_VENV)/bin/python || $(PYTHON) -m venv $(AC_VENV)
	$(AC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC) \
	  -e . "pytest>=8" "hypothesis>=6.100"
	$(AC_VENV)/bin/python -m musicgen_edu install-audiocraft
	MUSICGEN_REQUIRE_AUDIOCRAFT=1 $(AC_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  tests/test_backend_audiocraft.py tests/test_convert.py -k "audiocraft"

# Colab and course servers lag: every lower bound in pyproject.toml that scripts/min_versions.py
# pins (transformers, numpy, peft, ipywidgets: 7.7.1 is Colab's) is installed exactly, torch as above,
# in .venv-min; then the tests that exercise them: the widgets and studio headless, the parity
# with transformers' generate and modules, the codec, text encoder and audio/numpy code
MIN_VENV ?= .venv-min
MIN_TESTS = tests/test_widgets.py tests/test_exercises_lecture07.py tests/test_models.py \
  tests/test_codec.py tests/test_text.py tests/test_native.py tests/test_audio.py \
  tests/test_chroma.py tests/test_patterns.py tests/test_sampling.py \
  tests/test_train_objective.py tests/test_train_lora.py \
  tests/test_generator.py::test_tokens_equal_transformers_generate
# slow and about torch, not the pinned packages (make test runs them)
MIN_SKIP = musicgen_small_architecture or every_mode_runs_on_native or packed_linears

test-min:
	@test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC) \
	  -e . $$($(PYTHON) scripts/min_versions.py) "pytest>=8" "hypothesis>=6.100" "ipython>=8"
	$(MIN_VENV)/bin/python scripts/min_versions.py --check
	$(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  -W "ignore::DeprecationWarning:ipywidgets.widgets.widget" $(MIN_TESTS) -k "not ($(MIN_SKIP))"

docs: install-dev
	@$(MAKE) --no-print-directory docs-run PYTHON="$(PYTHON)"
	$(PYTHON) -m mkdocs build --strict --site-dir $(SITE_DIR)
	@echo "open $(abspath $(SITE_DIR))/index.html"

# The site shows each lecture as run here at its own default parameters (the offline debug
# model, CPU), not as the test tier ran it: papermill runs notebooks/NN_x.ipynb with nothing
# injected, in a folder of its own (what it writes stays there), into build/docs-run/notebooks/,
# which docs/hooks.py renders (its outputs, not the download: that is the clean notebook).
# A lecture reruns when it is newer than its run; `make -B docs-run` reruns them all.
DOCS_RUN = build/docs-run
LECTURES = $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

docs-run: $(patsubst notebooks/%,$(DOCS_RUN)/notebooks/%,$(LECTURES))

$(DOCS_RUN)/notebooks/%.ipynb: notebooks/%.ipynb
	@rm -rf $(DOCS_RUN)/work/$* && mkdir -p $(DOCS_RUN)/work/$* $(@D)
	cd $(DOCS_RUN)/work/$* && env -u MPLBACKEND $(PYTHON) -m papermill --no-progress-bar \
	  --kernel python3 $(abspath $<) $*.ipynb
	mv $(DOCS_RUN)/work/$*/$*.ipynb $@

# http://127.0.0.1:8000 with live reload; warnings are shown, not fatal (`make docs` is strict)
docs-serve: install-docs
	$(PYTHON) -m mkdocs serve
