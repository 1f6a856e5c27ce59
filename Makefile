# atemu — two commands for a fresh Debian machine with Python 3.11:
#   make run    install and start the emulator on its default profile (eseye-anynet) on a pty
#   make test   install what the tests need (mosquitto, chromium via apt-get) and run them
# and for the project's own checks:
#   make bench  benchmarks (make bench-quick: a small run)
#   make soak   one module under mixed load for SOAK_SECONDS (default 600), RSS sampled
#   make test-docker   the compose bench and Kubernetes manifests, for real, with rootful podman
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= eseye-anynet
ARGS   ?=
SOAK_SECONDS ?= 600
SUDO   := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo)
APT_UPDATED := /tmp/.atemu-apt-updated

.PHONY: run install test test-deps bench bench-quick soak fuzz clean podman-setup docker-images test-docker

$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "make: python3-venv is missing; installing it with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	@$(PY) -m pip install -q --upgrade pip

# editable install: code changes need no reinstall; pyproject.toml changes (dependencies, entry points) do
$(VENV)/.atemu-installed: pyproject.toml | $(PY)
	@echo "make: installing atemu into $(VENV) (once)"
	@$(PY) -m pip install -q -e .
	@touch $@

install: $(VENV)/.atemu-installed

# exec: the shell gives way to atemu, which handles Ctrl+C itself (closes everything, exits 0). make,
# interrupted too, then stops without a message of its own.
run: install
	exec $(VENV)/bin/atemu run $(PROFILE) $(ARGS)

APT_LOG := /tmp/atemu-apt.log
define apt_need
	@if ! command -v $(1) >/dev/null 2>&1; then \
	  echo "make: $(1) is missing; installing Debian package $(2) with apt-get ($(3); output in $(APT_LOG))"; \
	  [ -f $(APT_UPDATED) ] || { $(SUDO) apt-get update -qq >>$(APT_LOG) 2>&1 && touch $(APT_UPDATED); }; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(2) >>$(APT_LOG) 2>&1 \
	    || { echo "make: apt-get install $(2) failed; see $(APT_LOG)"; exit 1; }; \
	  echo "make: $(2) installed"; \
	fi
endef

# the test extras: pytest, hypothesis, pytest-timeout (pyproject.toml [test])
$(VENV)/.atemu-test-installed: pyproject.toml | $(PY)
	@echo "make: installing atemu with its test extras (pytest, hypothesis, pytest-timeout) into $(VENV)"
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@ $(VENV)/.atemu-installed

test-deps: $(VENV)/.atemu-test-installed
	$(call apt_need,/usr/sbin/mosquitto,mosquitto,the MQTT broker of the tests; a few seconds)
	$(call apt_need,openssl,openssl,certificates of the TLS tests; a few seconds)
	$(call apt_need,/usr/bin/chromium,chromium,for the control web page tests; about a minute)

test: test-deps
	@echo "make: running the test suite (pytest; a few minutes)"
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(VENV)/.atemu-test-installed
	$(PY) tests/bench/run.py --out bench-results

bench-quick: $(VENV)/.atemu-test-installed
	$(PY) tests/bench/run.py --quick --out bench-results

# one module under mixed load (commands, TCP, MQTT, files, URC storms, faults) for SOAK_SECONDS, RSS sampled;
# fails on a stuck step or RSS growth after warm-up (tests/bench/soak.py --help)
soak: $(VENV)/.atemu-test-installed
	$(call apt_need,/usr/sbin/mosquitto,mosquitto,the MQTT broker of the soak; a few seconds)
	$(PY) tests/bench/soak.py --seconds $(SOAK_SECONDS) --out bench-results

# in-process fuzz: every profile, FUZZ_INPUTS inputs each (default 1e6), real local peers, seeded
FUZZ_INPUTS ?= 1000000
FUZZ_SEED   ?= 1
fuzz: $(VENV)/.atemu-test-installed
	$(call apt_need,/usr/sbin/mosquitto,mosquitto,the MQTT broker of the fuzz peers; a few seconds)
	$(PY) tests/fuzzer.py --inputs $(FUZZ_INPUTS) --seed $(FUZZ_SEED) --json fuzz-results.json

clean:
	rm -rf $(VENV) build *.egg-info bench-results fuzz-results.json .pytest_cache docker/wheels/*.whl

# ---- containers (podman, no registry needed) ----------------------------------------------------
# podman-setup: Debian packages, the local base image (mmdebstrap, cached in $(ATEMU_CACHE)), and a
# containers.conf fitted to this machine (cgroupfs without systemd, runc on hybrid cgroups, ulimits
# the machine allows). docker-images: wheels from the PyPI mirror into docker/wheels, then an offline
# image build on the local base. test-docker: docker/test-docker.sh (compose bench + kube play).
ATEMU_CACHE ?= /var/cache/atemu
PODMAN_CONF := build/podman
WITH_PODMAN := CONTAINERS_CONF=$(CURDIR)/$(PODMAN_CONF)/containers.conf
ATEMU_BASE  ?= localhost/atemu-base:bookworm

podman-setup:
	@ATEMU_CACHE=$(ATEMU_CACHE) docker/podman-setup.sh $(PODMAN_CONF) >/dev/null

docker/wheels/.stamp: pyproject.toml | $(PY)
	@echo "make: wheels for the image into docker/wheels"
	@rm -f docker/wheels/*.whl
	@$(PY) -m pip wheel -q -w docker/wheels . 'setuptools>=68' wheel
	@touch $@

# the image a previous build left untagged is removed, so repeated CI runs do not fill the disk
docker-images: podman-setup docker/wheels/.stamp
	@export $(WITH_PODMAN); old=$$(podman image inspect -f '{{.Id}}' localhost/atemu:bench 2>/dev/null); \
	  echo "make: podman build localhost/atemu:bench (offline, on $(ATEMU_BASE))"; \
	  podman build -q --network none -f docker/Dockerfile --build-arg BASE=$(ATEMU_BASE) \
	    -t localhost/atemu:bench . >/dev/null || exit 1; \
	  new=$$(podman image inspect -f '{{.Id}}' localhost/atemu:bench); \
	  if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then podman rmi "$$old" >/dev/null 2>&1 || true; fi

test-docker: docker-images install
	$(WITH_PODMAN) PY=$(PY) docker/test-docker.sh
