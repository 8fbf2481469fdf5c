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

# two workers: the suite is mostly single-threaded tests (torch is held to one thread in Testing/conftest.py)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 Testing

clean:
	rm -rf $(VENV) demo-output
