# pgwarden: `make demo` and `make test` on a fresh Debian 12 machine, as root.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Real Patroni, only for its patronictl (the compat test drives our cluster with it). A venv of
# its own so Patroni's dependencies never mix with the project's. patronictl imports
# psycopg at startup (even for `list`), hence the psycopg3 extra next to etcd3.
PATRONI_VENV := .venv-patroni
PATRONI_PIN := patroni[etcd3,psycopg3]==4.1.5
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

# Re-run when the Makefile (and so the pin) changes; pip makes that a no-op if unchanged.
$(PATRONI_VENV)/.installed: Makefile | deps
	@test -x $(PATRONI_VENV)/bin/python || /usr/bin/python3 -m venv $(PATRONI_VENV)
	$(PATRONI_VENV)/bin/python -m pip install -q --upgrade pip
	$(PATRONI_VENV)/bin/python -m pip install -q '$(PATRONI_PIN)'
	@touch $@

test: venv $(PATRONI_VENV)/.installed
	$(PY) -m pytest -v -ra --durations=15 -p no:cacheprovider $(PYTEST_ARGS) tests

unit: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: venv
	$(PY) -m pytest -v -ra -p no:cacheprovider -m integration tests

demo: venv
	$(PY) -m pgwarden.lab demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
