# The two commands from the README:
#   make demo   regenerate release/, grade the bundled sample class, print the grade table
#   make test   run the test suite
# Both create the pinned environment in .venv on first use.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test release lectures lab clean

$(STAMP): pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	# Exactly torch 2.13.0: any looser requirement can pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/autograder demo

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

release: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/autograder release

# Re-execute the lecture notebooks in place (they are committed with outputs).
lectures: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/run_lectures.py

lab: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab

clean:
	rm -rf submitted autograded feedback reports gradebook.db
