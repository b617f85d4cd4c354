# The whole set-up on a fresh machine with Python 3.10+ and make:
#   make demo    # DALL·E 1 end to end at a small budget; PNG grids and eval table in demo_out/
#   make test    # the unit tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO := demo_out

.PHONY: demo test test-scale test-notebooks test-browser test-convert parity-fixtures gpu-wheels clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=10 -q -m "not scale" tests

# Every task on 8 fake devices and training on two processes: 6 minutes that `make test` leaves out (CI runs both).
test-scale: $(INSTALLED)
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=5 -q -m scale tests

# The notebooks, each run top to bottom in a fresh kernel at its small budget (CI runs this after `make test`).
NOTEBOOKS_INSTALLED := $(VENV)/.notebooks-installed

$(NOTEBOOKS_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet -e '.[test,notebooks]'
	touch $@

test-notebooks: $(NOTEBOOKS_INSTALLED)
	$(BIN)/python -m pytest -q --durations=4 tests_notebooks

# The web page (`run.py serve`, Gradio) driven in Chromium by Playwright. Chromium comes from the system
# (Debian: apt-get install chromium), never a downloaded build; the test skips without it, except under CI.
BROWSER_INSTALLED := $(VENV)/.browser-installed

$(BROWSER_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet -e '.[test,demo]' playwright
	touch $@

test-browser: $(BROWSER_INSTALLED)
	$(BIN)/python -m pytest -q -rs tests_browser

# Optional: the live parity tests against the PyTorch originals, and the fixtures `make test` reads
# (docs/weights.md). A CPU PyTorch first: elsewhere than this project's machines, pass
# TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu". dall_e and open_clip_torch come
# without their declared dependencies: dall_e imports none of torchvision, mypy or blobfile, and only
# open_clip's BPE file is read.
CONVERT_VENV := .venv-convert
TORCH ?= torch==2.13.0

$(CONVERT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(CONVERT_VENV)
	$(CONVERT_VENV)/bin/pip install --quiet --upgrade pip
	$(CONVERT_VENV)/bin/pip install --quiet $(TORCH)
	$(CONVERT_VENV)/bin/pip install --quiet -e '.[convert,test]' transformers==5.24.0 tokenizers==0.23.3 \
		diffusers==0.42.1
	$(CONVERT_VENV)/bin/pip install --quiet --no-deps DALL-E==0.1 open_clip_torch==3.3.0
	touch $@

test-convert: $(CONVERT_VENV)/.installed
	$(CONVERT_VENV)/bin/python -m pytest -q --durations=5 tests_convert

parity-fixtures: $(CONVERT_VENV)/.installed
	$(CONVERT_VENV)/bin/python tests_convert/make_fixtures.py

# The wheels a lent GPU machine lacks, for bench/gpu/session.sh (docs/performance.md, "On a lent GPU").
gpu-wheels: $(INSTALLED)
	PIP=$(BIN)/pip bench/gpu/fetch_wheels.sh

# DALL·E 1 at a small budget (about 10 minutes on 2 cores); the full run is configs/shapes_dalle.py.
RUN := $(BIN)/python run.py
DALLE := --config configs/shapes_dalle.py:demo --config.data.data_dir=$(DEMO)/data --workdir $(DEMO)/dalle

demo: $(INSTALLED)
	rm -rf $(DEMO)/dalle
	$(RUN) build-data $(DALLE)
	$(RUN) show-data $(DALLE) --num 16 --out $(DEMO)/shapes_train.png
	$(RUN) train-text-tokenizer $(DALLE)
	$(RUN) train-image-tokenizer $(DALLE)
	$(RUN) train $(DALLE)
	$(RUN) generate $(DALLE) --num-samples 4 --out $(DEMO)/dalle_samples.png \
		--prompt "a small red circle" --prompt "a large blue square" --prompt "a small green triangle" \
		--prompt "a large yellow cross" --prompt "a small white circle to the left of a large orange square"
	$(RUN) eval $(DALLE)
	@echo "demo done: $(DEMO)/dalle_samples.png, $(DEMO)/shapes_train.png, $(DEMO)/dalle/eval.md"

clean:
	rm -rf $(VENV) $(CONVERT_VENV) $(DEMO) *.egg-info .pytest_cache .peers .whl
