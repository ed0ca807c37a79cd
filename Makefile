PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup setup-web test test-avx2 test-arm64 test-zoo test-fleet test-distributed fuzz demo lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints/host.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/host.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP) setup-web
	$(BIN)/python -m pytest -q

# The browser side (unet-bench's web rows, unet-export webapp): a Chromium from the distribution when none is on
# the PATH (apt-get as root; otherwise it says how, and the web rows skip saying so), and the npm packages pinned
# in exporter/web/package-lock.json (npm ci, no install scripts). Never a browser downloaded by a package.
WEB := exporter/web
WEB_STAMP := $(WEB)/node_modules/.installed
setup-web: $(WEB_STAMP)

$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
	  || command -v google-chrome-stable >/dev/null || [ -n "$$UNET_BROWSER" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "setup-web: installing Chromium from the distribution (apt-get install chromium)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	    || echo "setup-web: apt-get could not install chromium: the web rows will be skipped"; \
	else echo "setup-web: no Chromium here and no apt-get as root: install chromium (or set UNET_BROWSER) for the web rows"; fi
	@if command -v npm >/dev/null; then (cd $(WEB) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error \
	  && touch node_modules/.installed) || echo "setup-web: npm ci failed (offline?): the web rows will be skipped"; \
	else echo "setup-web: no npm here (apt-get install nodejs npm): the web rows will be skipped"; fi

# The suite on an emulated AVX2/FMA-only CPU (AMD Zen 3, no AVX-512, no VNNI), whatever this machine has:
# qemu-user's CPUID is what TensorFlow, LiteRT, ONNX Runtime and OpenVINO dispatch their kernels on.
# Needs qemu-user (apt-get install qemu-user); ~13 min on 2 cores. Child processes run natively.
test-avx2: $(STAMP)
	@command -v qemu-x86_64 >/dev/null || { echo "test-avx2 needs qemu-user: apt-get install qemu-user" >&2; exit 2; }
	qemu-x86_64 -cpu EPYC-Milan $(BIN)/python -m pytest -q -p no:cacheprovider

# The device side on emulated Arm CPUs (Cortex-A72, Neoverse-N1, Neoverse-V1) in a Debian 12 arm64 root, made once
# and cached in artifacts/arm64/root (benchmarks/arm/root.sh: debootstrap, qemu-user 10 from bookworm-backports
# registered with binfmt_misc, the device side from a wheel of this checkout). Needs root privileges and
#   apt-get install -t bookworm-backports qemu-user-static debootstrap
# ~17 min on 2 cores after the root is built (~10 min once). Debian 13 (CPython 3.13) instead:
#   make test-arm64 SUITE=trixie ARM64_ROOT=artifacts/arm64/trixie
ARM64_ROOT ?= artifacts/arm64/root
SUITE ?= bookworm
test-arm64: $(STAMP)
	SUITE=$(SUITE) benchmarks/arm/root.sh $(ARM64_ROOT)
	ARM64_ROOT=$(abspath $(ARM64_ROOT)) UNET_ARM64=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_arm64.py

# Every model of the zoo (tests/zoo.py: the seed U-Net, BatchNorm, bilinear upsampling, MobileNet-style, 64x64 with 5
# classes and palette masks, softmax output) through every export mode, quant-report, --auto-fallback, pack and
# bench on LiteRT, ONNX Runtime and OpenVINO. make test runs a part of it; benchmarks/zoo.py writes the figures.
test-zoo: $(STAMP)
	UNET_ZOO_FULL=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_zoo.py

# unet-bench remote against two SSH "devices" on loopback (asyncssh servers with their own homes): real keys, real
# wheels into real venvs (from the package index), one device killed mid-run; one device that cannot reach the
# package index, installed from a wheelhouse. ~4 min on 2 cores; make test runs the rest.
test-fleet: $(STAMP)
	UNET_FLEET=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fleet.py

# Data-parallel training on Keras' JAX backend: one worker, then two on loopback (one killed mid-run, both
# resumed): five training processes, ~5 min on 2 cores, so not in make test (which checks the options).
test-distributed: $(STAMP)
	UNET_DISTRIBUTED=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_distributed.py

# The fuzz suite's long mode: FUZZ_SECONDS a target (default 10 minutes), a fresh seed each run, printed first so
# that a failure can be replayed (make fuzz UNET_FUZZ_SEED=N); the trial counts and outcomes go to
# artifacts/fuzz/seed-N.txt. ~110 min with the default (11 targets); the suite itself runs each target 5 s.
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	@seed=$${UNET_FUZZ_SEED:-$$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}; \
	report=artifacts/fuzz/seed-$$seed.txt; mkdir -p artifacts/fuzz; \
	echo "fuzz: seed $$seed, $(FUZZ_SECONDS) s a target; replay with: make fuzz UNET_FUZZ_SEED=$$seed; report: $$report"; \
	echo "# make fuzz: seed $$seed, $(FUZZ_SECONDS) s a target, $$(date -u +%FT%TZ)" > $$report; \
	UNET_FUZZ_SEED=$$seed UNET_FUZZ_SECONDS=$(FUZZ_SECONDS) UNET_FUZZ_REPORT=$$report \
	  $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py -k test_fuzz_; \
	status=$$?; cat $$report; exit $$status

demo: $(STAMP)
	$(BIN)/unet-export pipeline --out artifacts/demo

lint: $(STAMP)
	$(BIN)/ruff check exporter tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
