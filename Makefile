# Every target sets up what it needs, so a fresh machine runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS ?= -q --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: install demo test bench crd images tools lint clean help

help:
	@echo "make demo   - Fashion-MNIST into S3, pretrain, fine-tune vs. scratch (under 10 minutes)"
	@echo "make test   - the whole test suite"
	@echo "make bench  - input pipeline and training-step benchmarks"
	@echo "make crd    - regenerate the CRD (and its copies) from the spec model"
	@echo "make images - build the container images (needs a Docker engine)"
	@echo "make tools  - helm into .tools/bin (the delivery tests use it)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/pip install $(PIP_FLAGS) -e '.[trainer,operator,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m aimass.demo

test: $(STAMP) tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

crd: $(STAMP)
	$(BIN)/aimass crd --write

# Images are tagged with the package version, so a chart's appVersion and its images agree.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_PREFIX ?= aimass
DOCKER ?= docker

images:
	$(DOCKER) build -f operator/Dockerfile -t $(IMAGE_PREFIX)/operator:$(VERSION) .
	$(DOCKER) build -f trainer/Dockerfile -t $(IMAGE_PREFIX)/trainer:$(VERSION) .

tools: $(STAMP)
	$(BIN)/python hack/install_tools.py

lint: $(STAMP)
	$(BIN)/python -m compileall -q aimass trainer operator tests bench

clean:
	rm -rf $(VENV) .aimass build *.egg-info
