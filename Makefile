# One test command and one demo command, shared by the README and CI (.ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck unit wheel-check registry-bin go-tools compat-table clean

# Go tools the registry matrix and the real-client tests use (docs/registries.md), pinned.
# Each goes into .tools/bin under its own name; a stamp per name@version skips a built one,
# and the Go caches live under ~/.cache so a second machine run builds nothing.
TOOLS := $(CURDIR)/.tools
GO_TOOLS := \
	registry3=github.com/distribution/distribution/v3/cmd/registry@v3.1.2 \
	regctl=github.com/regclient/regclient/cmd/regctl@v0.11.7 \
	oras=oras.land/oras/cmd/oras@v1.3.6 \
	cosign=github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5 \
	crane=github.com/google/go-containerregistry/cmd/crane@v0.22.1
# Go on PATH, else where the Go release archive installs it (a non-login shell may lack it on PATH)
GO ?= $(shell command -v go 2>/dev/null || { test -x /usr/local/go/bin/go && echo /usr/local/go/bin/go; })
export GOMODCACHE ?= $(HOME)/.cache/go-mod
export GOCACHE ?= $(HOME)/.cache/go-build
export GOFLAGS ?= -trimpath

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

# Without Go, the tests run on distribution 2.8 alone (tests/conftest.py says what it skipped;
# with CI=true a missing tool fails the run instead).
go-tools:
	@if [ -z "$(GO)" ]; then \
		echo "go-tools: no Go toolchain: skipping distribution 3.x, regctl, oras, cosign" \
		     "(the tests run on distribution 2.8 only)"; \
		exit 0; \
	fi; \
	mkdir -p $(TOOLS)/bin $(TOOLS)/stamps; \
	for entry in $(GO_TOOLS); do \
		name=$${entry%%=*}; module=$${entry#*=}; stamp=$(TOOLS)/stamps/$$name@$${module##*@}; \
		if [ -f "$$stamp" ] && [ -x $(TOOLS)/bin/$$name ]; then continue; fi; \
		echo "go-tools: building $$name ($$module)"; \
		start=$$(date +%s); \
		rm -rf $(TOOLS)/gobin && mkdir -p $(TOOLS)/gobin; \
		GOBIN=$(TOOLS)/gobin $(GO) install "$$module" || exit 1; \
		mv $(TOOLS)/gobin/* $(TOOLS)/bin/$$name && touch "$$stamp"; \
		echo "go-tools: $$name built in $$(( $$(date +%s) - start ))s"; \
	done; \
	rm -rf $(TOOLS)/gobin

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict retention

# pytest runs last so that its summary closes the output; its junit report and the capability
# probes under build/ are what `make compat-table` turns into docs/registries.md's table.
test: $(STAMP) registry-bin go-tools lint typecheck wheel-check
	$(BIN)/python -m pytest -q --junitxml=build/test-report.xml

compat-table: $(STAMP)
	$(BIN)/python scripts/compat_table.py

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
	rm -rf $(VENV) build dist *.egg-info $(TOOLS)
