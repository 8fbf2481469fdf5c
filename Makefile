# Two entry points, each installing what it needs into .venv on a fresh machine:
#   make demo   segment the bundled sample, write results to demo-output/
#   make test   run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/aneurysmseg demo --output demo-output

test: $(STAMP)
	$(BIN)/python -m pytest -q Testing

clean:
	rm -rf $(VENV) demo-output
