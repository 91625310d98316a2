#!/usr/bin/env bash
# gmemscope's one entry point for people and CI:
#   bash dev.sh demo   set up, build, trace the built-in workload, report
#   bash dev.sh test   set up, build, run every test: the host lane (ctest on
#                      this machine's kernel) and the VM lane (tests/vm/run.sh:
#                      every kernel of tests/vm/kernels.tsv under QEMU; in CI,
#                      CI=true, a kernel that skips fails the run)
#   bash dev.sh setup | build
# Set-up installs Debian's packages the build and the tests need; it is
# idempotent and does nothing when they are all there.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(cmake make g++ clang llvm pkg-config libbpf-dev bpftool libelf-dev zlib1g-dev
          libcli11-dev libfmt-dev nlohmann-json3-dev catch2 python3 python3-jsonschema
          python3-prometheus-client ccache prometheus man-db)

setup() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

build() {
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j"$(nproc)"
}

demo() {
    build/gmemscope record -o build/demo.rec -- \
        build/gmemscope stress rebind pages=64 punch_pages=8 rebind_offset=1M
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
    setup) setup ;;
    build) setup; build ;;
    demo) setup; build; demo ;;
    test) setup; build; run_tests ;;
    *) echo "usage: bash dev.sh demo|test|setup|build" >&2; exit 2 ;;
esac
