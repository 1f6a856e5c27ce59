# atemu — two commands for a fresh Debian machine with Python 3.11:
#   make run    install and start the emulator on its default profile (eseye-anynet) on a pty
#   make test   install what the tests need (mosquitto, chromium via apt-get) and run them
#   make test-docker   the compose bench and Kubernetes manifests, for real, with rootful podman
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= eseye-anynet
ARGS   ?=
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

run: install
	$(VENV)/bin/atemu run $(PROFILE) $(ARGS)

define apt_need
	@if ! command -v $(1) >/dev/null 2>&1; then \
	  echo "make: $(1) is missing; installing Debian package $(2) with apt-get"; \
	  [ -f $(APT_UPDATED) ] || { $(SUDO) apt-get update -qq && touch $(APT_UPDATED); }; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(2) >/dev/null; \
	fi
endef

test-deps: $(PY)
	$(call apt_need,/usr/sbin/mosquitto,mosquitto)
	$(call apt_need,openssl,openssl)
	$(call apt_need,/usr/bin/chromium,chromium)
	@$(PY) -m pip install -q -e '.[test]'

test: test-deps
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	@$(PY) -m pip install -q -e '.[test]'
	$(PY) tests/bench/run.py --out bench-results

bench-quick: install
	$(PY) tests/bench/run.py --quick --out bench-results

clean:
	rm -rf $(VENV) build *.egg-info bench-results .pytest_cache docker/wheels/*.whl

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
