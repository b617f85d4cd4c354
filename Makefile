# The whole set-up on a fresh machine with Python 3.10+ and make:
#   make demo    # DALL·E 1 end to end at a small budget; PNG grids and eval table in demo_out/
#   make test    # the unit tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO := demo_out

.PHONY: demo test clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=10 -q tests

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
	rm -rf $(VENV) $(DEMO) *.egg-info
