# synthloop — every target creates .venv and installs pinned dependencies first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYOPENGL_PLATFORM ?= egl
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: venv sysdeps demo test test-fast lint bench base-model clean

venv: $(STAMP)

# Debian packages the project needs: Mesa's EGL + llvmpipe for offscreen rendering without a GPU,
# Chromium for the browser tests (driven by PyPI playwright; never `playwright install`), and a
# PostgreSQL server on 127.0.0.1:5432 for the stores of concurrent loops and their tests
# (docs/stores.md): when nothing answers there, Debian's `postgresql` is installed if missing,
# 127.0.0.1 gets trust authentication (a test machine's loopback only) and the cluster is started.
# Present on the standard image; installed here when missing (needs root, as on CI). Silent
# when everything is there.
sysdeps:
	@ldconfig -p | grep -q 'libEGL_mesa.so' || { \
	  echo "installing Mesa EGL (libegl1 libegl-mesa0 libgl1-mesa-dri)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri; }
	@test -x /usr/bin/chromium || { \
	  echo "installing Chromium (headless browser for the UI tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || { \
	  echo "PostgreSQL: nothing answers on 127.0.0.1:5432; installing (if missing) and starting Debian's postgresql"; \
	  dpkg -s postgresql >/dev/null 2>&1 || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }; \
	  ver=$$(ls /etc/postgresql | sort -V | tail -n 1); hba=/etc/postgresql/$$ver/main/pg_hba.conf; \
	  grep -qE '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' $$hba || \
	    sed -i '1i host all all 127.0.0.1/32 trust  # synthloop tests (make sysdeps): local test machines only' $$hba; \
	  pg_ctlcluster $$ver main start 2>/dev/null || pg_ctlcluster $$ver main reload; \
	  for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	  pg_isready -h 127.0.0.1 -p 5432; }

# torch first, pinned: `torch==2.13.0` resolves to the CPU wheel on these machines; an unpinned
# torch would pull a multi-GB CUDA build. For a GPU see README "GPU install".
$(STAMP): pyproject.toml requirements.lock | sysdeps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

# the closed loop on the embedded defaults (flows/orchestration/settings.py), warm-started from the committed
# base model (trainer/base_models/digits): 3 iterations on 2 CPU cores, Prefect's temporary
# server, MLflow in runs/mlflow.db; a second `make demo` resumes (no work).
demo: $(STAMP)
	$(VENV)/bin/synthloop run --init trainer/base_models/digits --set lr=0.0005

# re-run the recipe of the committed base model (trainer/base_models/digits: the loop's warm
# start): 4,000 uniform images, 1,500 steps x 32 synthetic-only, scored on real-val (~25 min on 2 cores)
base-model: $(STAMP)
	$(VENV)/bin/synthloop base-model --overwrite

# two pytest workers, one test file each at a time (pytest-xdist --dist loadfile): most slow tests
# wait on servers and subprocesses, so two of them share 2 cores well (docs/testing.md)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy generator trainer evaluator policy flows deployments

bench: $(STAMP)
	$(PY) benchmarks/render_throughput.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
