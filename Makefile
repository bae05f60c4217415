# The README's two commands: `make demo` and `make test`.
BUILD_DIR ?= build
SANITIZE_DIR ?= build-sanitize
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
# Each fuzz target as NAME:CORPUS (tests/fuzz/fuzz_NAME.cpp, tests/fuzz/corpus/CORPUS).
FUZZ_TARGETS = onnx_model:onnx onnx_external:onnx_external idx:idx npy:npy unit:unit manifest:manifest graph:onnx \
    assembler:assembler decoder:decoder delta:delta options:options http_response:http_response \
    http_request:http_request signature:signature
FUZZ_PROGRAMS = $(foreach target,$(FUZZ_TARGETS),fuzz_$(firstword $(subst :, ,$(target))))

.PHONY: all deps build demo test test-sanitize fuzz models format clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)
	@if [ -f $(BUILD_DIR)/python/bitinc/__init__.py ]; then scripts/link-python-module.sh $(BUILD_DIR)/python; fi

# The main job: the 3GPP evaluation of the bundled MobileNetV2 (UE1
# incremental vs UE2 direct at 33.6, 100 and 1100 Mbit/s) with a 4-bit
# per-channel base and refinements in order of accuracy per byte, so that it
# shows both updates: to the accuracy point and exact. Calibration ranks
# tensors on 100 training images and searches the point on 5,000 (the
# default --point-images); accuracy is measured on the first 1,000 test
# images, to stay within a few minutes on 2 cores (docs/evaluation.md).
DEMO_DIR ?= out/demo
DEMO_MODEL ?= models/mobilenetv2.onnx
demo: build
	$(BUILD_DIR)/bitinc eval $(DEMO_MODEL) --ladder 4,8,16 --per-channel --calibrate \
	    --calibration-images 1000 --sensitivity-images 100 --limit 1000 --curve-points 4 \
	    -o $(DEMO_DIR)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-sanitize: deps
	@cmake -S . -B $(SANITIZE_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DBITINC_SANITIZE=ON -DBITINC_BUILD_BENCHMARKS=OFF >/dev/null
	@cmake --build $(SANITIZE_DIR) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    ctest --test-dir $(SANITIZE_DIR) --output-on-failure -j $(JOBS)

# Each fuzz target for FUZZ_SECONDS under libFuzzer + ASan + UBSan. New
# inputs go to a scratch directory; the committed corpus is only read.
fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DBITINC_FUZZ=ON -DBITINC_BUILD_BENCHMARKS=OFF >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target $(FUZZ_PROGRAMS)
	@for target in $(FUZZ_TARGETS); do \
	    name=$${target%%:*}; corpus=$${target##*:}; scratch=$$(mktemp -d); \
	    echo "fuzz_$$name: $(FUZZ_SECONDS) s"; \
	    if ! $(FUZZ_DIR)/tests/fuzz_$$name -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/ \
	        $$scratch tests/fuzz/corpus/$$corpus >$(FUZZ_DIR)/fuzz_$$name.log 2>&1; then \
	        tail -n 40 $(FUZZ_DIR)/fuzz_$$name.log; rm -rf $$scratch; exit 1; \
	    fi; \
	    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" $(FUZZ_DIR)/fuzz_$$name.log; \
	    rm -rf $$scratch; \
	done

# Trains the Fashion-MNIST models (see docs/models.md); needs the training stack.
models:
	@scripts/install-deps.sh --training
	tools/make_models.sh

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	rm -rf $(BUILD_DIR) $(SANITIZE_DIR) $(FUZZ_DIR)
