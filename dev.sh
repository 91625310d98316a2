#!/usr/bin/env bash
# gmemscope's one entry point for people and CI:
#   bash dev.sh demo   set up and build only what the demo runs (gmemscope),
#                      trace the built-in workload, report
#   bash dev.sh test   set up, build, run every test: the host lane (ctest on
#                      this machine's kernel) and the VM lane (tests/vm/run.sh:
#                      every kernel of tests/vm/kernels.tsv under QEMU; in CI,
#                      CI=true, a kernel that skips fails the run)
#   bash dev.sh setup  the packages of the build and the tests
#   bash dev.sh build  the same packages, and every target
# Set-up installs Debian's packages the build needs (demo) or the build
# and the tests need (test, setup, build); it is idempotent and does nothing
# when they are all there.  Each step says what it does before it starts.
set -euo pipefail
cd "$(dirname "$0")"

# What configuring and building gmemscope needs (GMS_TESTS=OFF).
BUILD_PACKAGES=(cmake make g++ clang llvm pkg-config libbpf-dev bpftool libelf-dev zlib1g-dev
                libcli11-dev libfmt-dev nlohmann-json3-dev ccache)
# What the tests add: Catch2, the JSON Schema validator, the metrics
# checks (prometheus_client, promtool), the man pages' check.
TEST_PACKAGES=(catch2 python3 python3-jsonschema python3-prometheus-client prometheus man-db)

step() { echo "==> $*"; }

setup() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        step "packages: all $# there"
        return
    fi
    step "packages: installing ${#missing[@]} of $#: ${missing[*]}"
    apt-get update -qq
    # apt's own lines (Get:, Unpacking, Setting up) are the progress.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# build ON|OFF [TARGET...]: GMS_TESTS and what to build (default: all).
build() {
    local tests=$1
    shift
    step "configure (build/, tests $tests)"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGMS_TESTS="$tests" >/dev/null
    step "build ${*:-everything} (-j$(nproc))"
    cmake --build build -j"$(nproc)" ${1:+--target "$@"}
}

demo() {
    step "record the built-in workload (stress rebind) into build/demo.rec"
    build/gmemscope record -f -o build/demo.rec -- \
        build/gmemscope stress rebind pages=64 punch_pages=8 rebind_offset=1M
    step "report -i build/demo.rec"
    build/gmemscope report -i build/demo.rec
}

run_tests() {
    local host=0 vm=0
    ctest --test-dir build --output-on-failure || host=$?
    # Every kernel of tests/vm/kernels.tsv, one after the other.
    bash tests/vm/run.sh | tee build/vm-lane.log || vm=${PIPESTATUS[0]}
    # The lane says SKIPPED (77) only where a kernel cannot run; CI must
    # run every one of them.
    if ((vm == 77)) && [[ -z ${CI:-} ]]; then
        vm=0
    fi
    echo "host lane: $( ((host == 0)) && echo passed || echo FAILED ); vm lane exit $vm"
    grep -E '^vm-lane(\[[^]]*\])?: [0-9]+ passed' build/vm-lane.log || echo "vm-lane: no summary (see build/vm-lane.log)"
    ((host == 0 && vm == 0))
}

case "${1:-}" in
    setup) setup "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}" ;;
    build) setup "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"; build ON ;;
    demo) setup "${BUILD_PACKAGES[@]}"; build OFF gmemscope; demo ;;
    test) setup "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"; build ON; run_tests ;;
    *) echo "usage: bash dev.sh demo|test|setup|build" >&2; exit 2 ;;
esac
