# pgwarden: `make demo` and `make test` on a fresh Debian 12 machine, as root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# What the suite and the demo run for real: PostgreSQL 15, etcd, network namespaces.
DEB_PKGS := postgresql-15 postgresql-contrib-15 etcd-server etcd-client python3-venv \
            iproute2 procps
PYTEST_ARGS ?=

.PHONY: all deps venv test unit integration demo clean

all: test

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The venv uses Debian's python3 so the postgres user can run the agent from it too.
$(VENV)/.installed: pyproject.toml | deps
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -v -ra --durations=15 -p no:cacheprovider $(PYTEST_ARGS) tests

unit: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: venv
	$(PY) -m pytest -v -ra -p no:cacheprovider -m integration tests

demo: venv
	$(PY) -m pgwarden.lab demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
