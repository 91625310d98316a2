// What the tests share: running the real binary, and the skip rule for
// tests that need root and /dev/kvm (in CI nothing skips).
#pragma once

#include <string>
#include <vector>

namespace gms::test {

struct Run {
    int exit_code = -1;
    std::string out, err;
};

// Runs argv (argv[0] found on PATH or a path) and captures its output.
Run run(const std::vector<std::string>& argv);
std::string binary();   // build/gmemscope
std::string source_dir();
// "" when BPF is usable here (root), else why not.
std::string why_no_root();
// "" when BPF and the built-in workload's guests are usable here: root,
// /dev/kvm, and guest_memfd with MMAP|INIT_SHARED (cap 244, since 6.17).
std::string why_no_live();
// "" when the precise tier can be tested here: root, /dev/kvm, and a
// kernel that loads fentry/fexit programs (the VM lane, tests/vm/).
std::string why_no_precise();
// why_no_precise(), and a VFIO group (/dev/vfio/N) to map buffers through.
std::string why_no_vfio();

}  // namespace gms::test

// Skips the test when `why` names a reason, and says it.
#define GMS_SKIP_IF(why)                           \
    do {                                                     \
        std::string why_ = (why);                            \
        if (!why_.empty()) {                                 \
            WARN("SKIPPED: " << why_);                       \
            return;                                          \
        }                                                    \
    } while (0)

#define GMS_REQUIRE_ROOT() GMS_SKIP_IF(gms::test::why_no_root())
#define GMS_REQUIRE_LIVE() GMS_SKIP_IF(gms::test::why_no_live())
