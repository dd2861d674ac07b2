# stemnmf: two commands on a fresh machine.
#   make demo   create .venv, install, simulate a scan, run the pipeline, write a report
#   make test   create .venv, install with test extras, run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo-out

.PHONY: demo test bench browser clean numba-cache

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(MAKE) --no-print-directory numba-cache
	touch $(STAMP)

# orix and diffsims compile numba functions on first import and cache them beside their sources:
# written here once, by one process (the test workers keep caches of their own, tests/conftest.py)
numba-cache:
	$(BIN)/python -c "import stemnmf.crystal, orix.quaternion, orix.vector, diffsims.generators.simulation_generator"

# The report is checked in a real headless browser: Chromium and its driver from Debian.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 --dist loadfile --max-worker-restart=0 -q

demo: $(STAMP) numba-cache
	$(BIN)/python -m stemnmf.demo $(DEMO)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@echo "run a benchmark with: $(BIN)/python bench/<name>.py"

clean:
	rm -rf $(VENV) $(DEMO) build src/*.egg-info .pytest_cache .hypothesis
