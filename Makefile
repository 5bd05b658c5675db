# fedc: the targets a newcomer uses. The build itself is CMake (CMakeLists.txt).
#   make demo     install what is missing, build, run the demo federation on Fashion-MNIST
#   make check    install what is missing, build, run the test suite (normal + ASan/UBSan,
#                 then the client-only no-BLAS build)
#   make check-variants  the client-only, no-BLAS build and its tests
#   make bench    build and run the benchmarks
#   make install  install library, headers, pkg-config and CMake files (PREFIX=/usr/local)
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
ASAN_BUILD ?= build-asan
CMAKE_FLAGS ?=

.PHONY: all deps build demo check check-fast check-asan check-variants bench install clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DFEDC_WERROR=ON $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	$(BUILD)/fedc sim examples/fmnist-fedavg.ini --out out/demo

check: build
	cd $(BUILD) && ctest -j$(JOBS) --output-on-failure --timeout 600
	$(MAKE) --no-print-directory check-asan
	$(MAKE) --no-print-directory check-variants

check-fast: build
	cd $(BUILD) && ctest -j$(JOBS) --output-on-failure --timeout 600

check-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFEDC_SANITIZE=ON -DFEDC_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest -j$(JOBS) --output-on-failure --timeout 900

# The small-device build: client only (no HTTP server, no SQLite), plain-C kernels, no MPI.
check-variants: deps
	cmake -S . -B build-client -DFEDC_CLIENT_ONLY=ON -DFEDC_WITH_BLAS=OFF -DFEDC_WITH_MPI=OFF -DFEDC_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build build-client -j$(JOBS)
	cd build-client && ctest -j$(JOBS) --output-on-failure --timeout 600

bench: build
	$(BUILD)/fedc bench

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-client
