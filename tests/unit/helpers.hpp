// What the tests share: running the real binary, and the one skip idiom.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gms::test {

// Why a test cannot run here; empty when it can. `ci_must_run`: every lane
// that runs the test in CI provides what it lacks (root, /dev/kvm, the
// JSON validator on the host), so under CI=true its absence fails the
// test. Otherwise what it needs belongs to another lane (a kernel that
// loads fentry or the BPF LSM, the host lane's exact answers), and the
// test is skipped in CI too. A plain string is the second kind.
struct Why {
    std::string reason;
    bool ci_must_run = false;

    Why() = default;
    Why(std::string r, bool must = false) : reason(std::move(r)), ci_must_run(must) {}
    Why(const char* r) : reason(r) {}
    bool empty() const { return reason.empty(); }
    operator const std::string&() const { return reason; }
};
// What a lane that runs the test must provide (see Why).
inline Why needed(std::string reason) { return reason.empty() ? Why() : Why(std::move(reason), true); }
// CI=true (and not "false"/"0"): skips of what CI must provide fail.
bool in_ci();

struct Run {
    int exit_code = -1;
    std::string out, err;
};

// Runs argv (argv[0] found on PATH or a path) and captures its output.
Run run(const std::vector<std::string>& argv);
std::string binary();   // build/gmemscope
std::string source_dir();
// Empty when BPF is usable here (root), else why not.
Why why_no_root();
// "" when BPF and the built-in workload's guests are usable here: root,
// /dev/kvm, and guest_memfd with MMAP|INIT_SHARED (cap 244, since 6.17).
Why why_no_live();
// "" when the precise tier can be tested here: root, /dev/kvm, and a
// kernel that loads fentry/fexit programs (the VM lane, tests/vm/).
std::string why_no_precise();
// why_no_precise(), and a VFIO group (/dev/vfio/N) to map buffers through.
std::string why_no_vfio();
// why_no_vfio(), and private memory with iommufd: VM type
// KVM_X86_SW_PROTECTED_VM, /dev/iommu and a VFIO device cdev (the VM
// lane's `conversion` kernel, tests/vm/build-kernel.sh).
std::string why_no_private();
// `first` when it is not empty, else why the BPF LSM cannot veto here ("" if it can).
std::string why_no_lsm_after(std::string first);
// The VM types KVM_CREATE_VM takes here (KVM_CAP_VM_TYPES), -errno if
// /dev/kvm cannot say.
int kvm_vm_types();

std::string shell_quote(const std::string& s);

// How much slower this machine runs than the one the tests' waits were set
// for: GMS_TIME_FACTOR, which the VM lane's /init measures at boot and
// again between tests as the host's load changes (a fixed CPU loop under
// emulation, tests/vm/init.sh); 1 where it is not set.
double time_factor();
// `limit` times time_factor().
std::chrono::milliseconds scaled(std::chrono::milliseconds limit);
// Polls `ready` (a cheap look at state: a file, a map, a socket) every
// 20 ms until it holds; false after scaled(limit).
bool wait_until(const std::function<bool()>& ready, std::chrono::milliseconds limit);

// What of gmemscope is left in the kernel or running, one description a
// line: entries pinned under /sys/fs/bpf/gmemscope, BPF links of
// gmemscope's programs, gmemscope processes (and forks of this binary)
// other than this one and its parents.
std::vector<std::string> find_leftovers();
// Removes them: kills those processes, `enforce --stop` and unlinks what
// stays pinned, then waits (scaled 10 s) for the links to go. Returns what
// is still there afterwards.
std::vector<std::string> remove_leftovers();

// Persisted enforcement (`enforce --persist`) removed at scope exit
// (`enforce --stop`), so that a failed assertion leaves none to the next
// test. A timeout or signal skips destructors: the VM lane's check
// between tests (find_leftovers) catches those.
struct StopPersistedAtExit {
    StopPersistedAtExit() = default;
    ~StopPersistedAtExit();
    StopPersistedAtExit(const StopPersistedAtExit&) = delete;
    StopPersistedAtExit& operator=(const StopPersistedAtExit&) = delete;
};

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
const Why& why_no_validator();

// Anonymous memory, never touched: user addresses for memslots and
// mappings (the index and enforcement tests).
struct Buffer {
    explicit Buffer(uint64_t pages);
    ~Buffer();
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    std::byte* page(uint64_t i) const { return base + i * 4096; }
    uint64_t pages;
    std::byte* base;
};

// In a child just forked by a test (on the test's main thread): SIGKILL
// when the test process ends, however it ends (a failed REQUIRE, a
// signal, CTest's SIGKILL at its timeout), so that no loader or workload
// a test started runs on with its programs attached.
void die_with_test(pid_t test);

// A command running in the background, its stdout and stderr collected;
// killed (SIGKILL) and reaped at scope exit if still running, and with
// the test process (die_with_test).
class Background {
public:
    explicit Background(const std::vector<std::string>& argv);
    ~Background();
    Background(const Background&) = delete;
    Background& operator=(const Background&) = delete;

    pid_t pid() const { return pid_; }
    // Reads output until stderr holds `text` or the timeout (scaled by
    // time_factor()); whether it came.
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

// The one skip idiom: when `why` (a gms::test::Why or a string) names a
// reason, the test says "SKIPPED: <reason>" and returns. CTest reports it
// as skipped (SKIP_REGULAR_EXPRESSION in CMakeLists.txt), the VM lane's
// init.sh as SKIP. Under CI=true a reason CI must not have fails instead.
#define GMS_SKIP_IF(why)                                                             \
    do {                                                                             \
        const gms::test::Why why_ = (why);                                           \
        if (!why_.empty()) {                                                         \
            if (why_.ci_must_run && gms::test::in_ci())                              \
                FAIL("CI must run this test, but it cannot run: " << why_.reason);   \
            WARN("SKIPPED: " << why_.reason);                                        \
            return;                                                                  \
        }                                                                            \
    } while (0)

#define GMS_REQUIRE_ROOT() GMS_SKIP_IF(gms::test::why_no_root())
#define GMS_REQUIRE_LIVE() GMS_SKIP_IF(gms::test::why_no_live())
#define SKIP_WITHOUT_VALIDATOR() GMS_SKIP_IF(gms::test::why_no_validator())
