# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs prunelora, runs the paper's comparison on the embedded data, prints the table
#   make test   creates .venv, installs prunelora with its test tools, runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	# the second embedded data set; --no-deps: its own loader needs TensorFlow, prunelora reads the files directly
	$(BIN)/pip install --quiet --no-deps animal-mnist==0.4
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/prunelora run --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
