# The whole set-up on a fresh machine with Python 3.10+ and make:
#   make demo    # build the data, train the tokenizer and a model, write PNG grids to demo_out/
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
	$(BIN)/python -m pytest -n 2 -q tests

demo: $(INSTALLED)
	$(BIN)/python run.py build-data --config configs/shapes_toy.py --config.data.data_dir=$(DEMO)/data
	$(BIN)/python run.py show-data --config configs/shapes_toy.py --config.data.data_dir=$(DEMO)/data --out $(DEMO)/shapes_train.png
	$(BIN)/python run.py show-data --config configs/shapes_toy.py --config.data.data_dir=$(DEMO)/data --split test_compositional --out $(DEMO)/shapes_test_compositional.png
	$(BIN)/python run.py check-oracle --config configs/shapes_toy.py --num 200
	$(BIN)/python run.py train-text-tokenizer --config configs/shapes_toy.py --config.data.data_dir=$(DEMO)/data --workdir $(DEMO)/toy
	rm -rf $(DEMO)/toy/checkpoints $(DEMO)/toy/metrics.jsonl $(DEMO)/toy/tensorboard
	$(BIN)/python run.py train --config configs/shapes_toy.py --config.data.data_dir=$(DEMO)/data --workdir $(DEMO)/toy
	@echo "demo done: see $(DEMO)/*.png and $(DEMO)/toy/metrics.jsonl"

clean:
	rm -rf $(VENV) $(DEMO) *.egg-info
