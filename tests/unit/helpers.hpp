// What the tests share: running the real binary, and the skip rule for
// tests that need root and /dev/kvm (in CI nothing skips).
#pragma once

#include <sys/types.h>

#include <chrono>
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
// why_no_vfio(), and private memory with iommufd: VM type
// KVM_X86_SW_PROTECTED_VM, /dev/iommu and a VFIO device cdev (the VM
// lane's `conversion` kernel, tests/vm/build-kernel.sh).
std::string why_no_private();
// The VM types KVM_CREATE_VM takes here (KVM_CAP_VM_TYPES), -errno if
// /dev/kvm cannot say.
int kvm_vm_types();

std::string shell_quote(const std::string& s);

// A directory under /tmp, removed with everything in it at scope exit.
struct ScratchDir {
    std::string path;
    ScratchDir();
    ~ScratchDir();
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
};

// tests/validate_json.py on `lines` (its stdin); `args` are its flags.
Run validate(const std::string& lines, const std::vector<std::string>& args = {});
// The validator passes `lines`, each of one of the kinds in `expect`.
void require_valid(const std::string& lines, const std::string& expect);
// "" when tests/validate_json.py can run here (Debian's python3-jsonschema),
// else why not: the VM lane's initramfs, for one, has no Python.
const std::string& why_no_validator();

// A command running in the background, its stdout and stderr collected;
// killed (SIGKILL) and reaped at scope exit if still running.
class Background {
public:
    explicit Background(const std::vector<std::string>& argv);
    ~Background();
    Background(const Background&) = delete;
    Background& operator=(const Background&) = delete;

    pid_t pid() const { return pid_; }
    // Reads output until stderr holds `text` or the timeout; whether it came.
    bool wait_for_stderr(const std::string& text, std::chrono::milliseconds timeout);
    // Sends sig (0: none), then collects everything until the command exits.
    Run stop(int sig);
    const std::string& err() const { return r_.err; }

private:
    void pump(int timeout_ms);
    pid_t pid_ = -1;
    int fds_[2] = {-1, -1};
    Run r_;
};

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
#define SKIP_WITHOUT_VALIDATOR() GMS_SKIP_IF(gms::test::why_no_validator())
