# One test command and one demo command, shared by the README and CI (.ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck unit wheel-check registry-bin clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian's docker-registry (the CNCF distribution registry) is what the tests run against.
registry-bin:
	@if [ -n "$$RETENTION_REGISTRY_BIN" ] || command -v docker-registry >/dev/null 2>&1; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's docker-registry package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; \
	else \
		echo "docker-registry is missing: run 'sudo apt-get install docker-registry'" \
		     "(Debian/Ubuntu) or set RETENTION_REGISTRY_BIN to a distribution 'registry' binary" >&2; \
		exit 1; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict retention

# pytest runs last so that its summary closes the output
test: $(STAMP) registry-bin lint typecheck wheel-check
	$(BIN)/python -m pytest -q

# The schemas ship inside the wheel: validate the example policies from an installed wheel.
wheel-check: $(STAMP)
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(BIN)/python -m pip wheel --quiet --no-deps -w build/wheel-check .
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/python -m pip install --quiet build/wheel-check/retention-*.whl
	cd build/wheel-check && venv/bin/retention validate ../../policies/*.yaml

demo: $(STAMP) registry-bin
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) build dist *.egg-info
