#include "helpers.hpp"

#include "loader/capture/tracer.hpp"
#include "loader/enforce/enforce.hpp"
#include "loader/probe/features.hpp"

#include <bpf/bpf.h>

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <signal.h>
#include <stdlib.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <thread>

namespace gms::test {

// GMS_TEST_BINARY runs the tests against another build (an older one, to
// see a test fail before its fix).
std::string binary()
{
    const char* other = getenv("GMS_TEST_BINARY");
    return other && *other ? other : GMS_BINARY;
}
std::string source_dir() { return GMS_SOURCE_DIR; }

bool in_ci()
{
    const char* ci = getenv("CI");
    return ci && *ci && std::string_view(ci) != "false" && std::string_view(ci) != "0";
}

Why why_no_root()
{
    return needed(geteuid() == 0 ? "" : "needs root (BPF)");
}

Why why_no_live()
{
    if (geteuid() != 0)
        return needed("needs root (BPF and /dev/kvm)");
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return needed(std::string("cannot open /dev/kvm: ") + strerror(errno));
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    close(kvm);
    if (vm < 0)
        return needed(std::string("KVM_CREATE_VM: ") + strerror(errno));
    // KVM_CAP_GUEST_MEMFD_FLAGS: the workload's gmem-only memslots need
    // GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED.
    int flags = ioctl(vm, KVM_CHECK_EXTENSION, 244);
    close(vm);
    if (flags < 0 || (flags & 3) != 3)
        return "this kernel's guest_memfd lacks MMAP|INIT_SHARED (KVM_CAP_GUEST_MEMFD_FLAGS), which the "
               "built-in workload's guests need";
    return "";
}

std::string why_no_precise()
{
    if (geteuid() != 0)
        return "needs root (BPF and /dev/kvm)";
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        return "no /dev/kvm";
    static const gms::Features f = gms::Features::probe();
    if (!f.loads(gms::ProgKind::fentry) || !f.loads(gms::ProgKind::fexit))
        return "this kernel refuses fentry/fexit programs (" + f.load(gms::ProgKind::fentry).detail +
               "); the VM lane (tests/vm/run.sh) runs these tests on a kernel that loads them";
    return "";
}

std::string why_no_vfio()
{
    std::string why = why_no_precise();
    if (!why.empty())
        return why;
    for (int group = 0; group < 256; group++)
        if (access(("/dev/vfio/" + std::to_string(group)).c_str(), F_OK) == 0)
            return "";
    return "no VFIO group in /dev/vfio: bind a device to vfio-pci (the VM lane binds QEMU's edu device)";
}

int kvm_vm_types()
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return -errno;
    int types = ioctl(kvm, KVM_CHECK_EXTENSION, 235);  // KVM_CAP_VM_TYPES, 6.8
    int err = errno;
    close(kvm);
    return types < 0 ? -err : types;
}

std::string why_no_private()
{
    std::string why = why_no_vfio();
    if (!why.empty())
        return why;
    int types = kvm_vm_types();
    if (types < 0 || !(types & (1 << 1)))
        return "this kernel has no KVM_X86_SW_PROTECTED_VM (KVM_CAP_VM_TYPES " + std::to_string(types) +
               "): the VM lane's conversion kernel (tests/vm/build-kernel.sh) has it";
    if (access("/dev/iommu", F_OK) != 0)
        return "no /dev/iommu (CONFIG_IOMMUFD)";
    std::error_code ec;
    if (!std::filesystem::exists("/dev/vfio/devices", ec))
        return "no /dev/vfio/devices: no VFIO device cdev (CONFIG_VFIO_DEVICE_CDEV)";
    return "";
}

std::string why_no_lsm_after(std::string first)
{
    if (!first.empty())
        return first;
    auto f = Features::probe();
    if (!f.bpf_lsm_active())
        return "bpf is not in this kernel's LSM list (" + (f.lsm_list().empty() ? "unknown" : f.lsm_list()) + ")";
    if (!f.loads(ProgKind::lsm))
        return "this kernel refuses LSM programs (" + f.load(ProgKind::lsm).detail + ")";
    return "";
}

Run run(const std::vector<std::string>& argv)
{
    return Background(argv).stop(0);
}

std::string shell_quote(const std::string& s)
{
    std::string q = "'";
    for (char c : s)
        q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

ScratchDir::ScratchDir()
{
    char tmpl[] = "/tmp/gms_test_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
}

ScratchDir::~ScratchDir()
{
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
}

double time_factor()
{
    static const double factor = [] {
        const char* f = getenv("GMS_TIME_FACTOR");
        double v = f && *f ? strtod(f, nullptr) : 1.0;
        return v >= 1.0 ? v : 1.0;
    }();
    return factor;
}

std::chrono::milliseconds scaled(std::chrono::milliseconds limit)
{
    return std::chrono::milliseconds(int64_t(double(limit.count()) * time_factor()));
}

bool wait_until(const std::function<bool()>& ready, std::chrono::milliseconds limit)
{
    auto end = std::chrono::steady_clock::now() + scaled(limit);
    while (!ready()) {
        if (std::chrono::steady_clock::now() >= end)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
}

namespace {

std::string exe_of(const std::string& pid)
{
    std::error_code ec;
    auto target = std::filesystem::read_symlink("/proc/" + pid + "/exe", ec);
    return ec ? std::string() : target.string();
}

std::string comm_of(pid_t pid)
{
    std::string comm;
    std::getline(std::ifstream("/proc/" + std::to_string(pid) + "/comm"), comm);
    return comm;
}

pid_t parent_of(pid_t pid)
{
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    auto close = line.rfind(')');
    if (close == std::string::npos)
        return 0;
    return pid_t(strtol(line.c_str() + close + 4, nullptr, 10));
}

// Processes running gmemscope or this test binary, but not this process
// and its parents (the test runner may itself be this binary).
std::vector<pid_t> leftover_processes()
{
    std::set<pid_t> mine;
    for (pid_t p = getpid(); p > 1 && mine.insert(p).second;)
        p = parent_of(p);
    std::error_code ec;
    std::set<std::string> exes = {std::filesystem::canonical(binary(), ec).string(), exe_of("self")};
    std::vector<pid_t> out;
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = e.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos)
            continue;
        pid_t pid = pid_t(std::stol(name));
        std::string exe = exe_of(name);
        if (!mine.count(pid) && !exe.empty() && exes.count(exe))
            out.push_back(pid);
    }
    return out;
}

// Entries pinned under /sys/fs/bpf/gmemscope.
std::vector<std::string> pinned_entries()
{
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(kEnforceDir, ec))
        out.push_back(e.path().string());
    return out;
}

// The kernel's BPF links whose program is one of gmemscope's (the kernel
// keeps the first 15 characters of a program's name).
std::vector<std::string> gmemscope_links()
{
    static const auto programs = built_programs();
    std::vector<std::string> out;
    __u32 id = 0;
    while (bpf_link_get_next_id(id, &id) == 0) {
        int link = bpf_link_get_fd_by_id(id);
        if (link < 0)
            continue;
        struct bpf_link_info li {};
        __u32 len = sizeof(li);
        int prog = bpf_obj_get_info_by_fd(link, &li, &len) == 0 ? bpf_prog_get_fd_by_id(li.prog_id) : -1;
        close(link);
        if (prog < 0)
            continue;
        struct bpf_prog_info pi {};
        len = sizeof(pi);
        bool got = bpf_obj_get_info_by_fd(prog, &pi, &len) == 0;
        close(prog);
        if (!got)
            continue;
        std::string_view name = pi.name;
        for (const auto& p : programs)
            if (std::string_view(p).substr(0, BPF_OBJ_NAME_LEN - 1) == name) {
                out.push_back("BPF link " + std::to_string(id) + " of program " + p);
                break;
            }
    }
    return out;
}

}  // namespace

std::vector<std::string> find_leftovers()
{
    std::vector<std::string> out;
    for (pid_t pid : leftover_processes())
        out.push_back("process " + std::to_string(pid) + " (" + comm_of(pid) + ")");
    for (const auto& path : pinned_entries())
        out.push_back("pinned " + path);
    for (auto& link : gmemscope_links())
        out.push_back(std::move(link));
    return out;
}

std::vector<std::string> remove_leftovers()
{
    auto procs = leftover_processes();
    for (pid_t pid : procs)
        kill(pid, SIGKILL);
    // Not our children, so not reaped here: a killed process is gone from
    // the list once it is a zombie (its exe link no longer resolves).
    wait_until([] { return leftover_processes().empty(); }, std::chrono::seconds(5));
    if (!pinned_entries().empty()) {
        run({binary(), "enforce", "--stop"});
        std::error_code ec;
        for (const auto& path : pinned_entries())
            std::filesystem::remove_all(path, ec);
    }
    // A link's ID goes when its last reference does, which the kernel
    // may drop after the holder's exit (bpf_link_put defers to a worker).
    wait_until([] { return find_leftovers().empty(); }, std::chrono::seconds(10));
    return find_leftovers();
}

StopPersistedAtExit::~StopPersistedAtExit()
{
    if (!pinned_entries().empty())
        run({binary(), "enforce", "--stop"});
}

Run validate(const std::string& lines, const std::vector<std::string>& args)
{
    ScratchDir dir;
    std::string input = dir.path + "/input.jsonl";
    std::ofstream(input) << lines;
    std::string cmd = "/usr/bin/python3 " + shell_quote(source_dir() + "/tests/validate_json.py");
    for (const auto& a : args)
        cmd += " " + shell_quote(a);
    cmd += " < " + shell_quote(input);
    return run({"/bin/sh", "-c", cmd});
}

void require_valid(const std::string& lines, const std::string& expect)
{
    REQUIRE_FALSE(lines.empty());
    auto v = validate(lines, {"--expect", expect});
    INFO("validate_json.py:\n" << v.out << v.err);
    INFO("documents (first 2000 characters):\n" << lines.substr(0, 2000));
    REQUIRE(v.exit_code == 0);
}

const Why& why_no_validator()
{
    static const Why why = [] {
        auto r = run({"/usr/bin/python3", "-c", "from jsonschema import Draft202012Validator"});
        return needed(r.exit_code == 0 ? std::string()
                                       : "no /usr/bin/python3 with jsonschema (apt-get install python3-jsonschema): " +
                                             r.err);
    }();
    return why;
}

Buffer::Buffer(uint64_t pages_) : pages(pages_)
{
    void* p = mmap(nullptr, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(p != MAP_FAILED);
    base = static_cast<std::byte*>(p);
}

Buffer::~Buffer()
{
    munmap(base, pages * 4096);
}

void die_with_test(pid_t test)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != test)   // it ended before the line above
        _exit(127);
}

Background::Background(const std::vector<std::string>& argv)
{
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
        throw std::runtime_error("pipe");
    pid_t test = getpid();
    pid_ = fork();
    if (pid_ == 0) {
        die_with_test(test);
        dup2(out[1], 1);
        dup2(err[1], 2);
        std::vector<char*> args;
        for (const auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        execvp(args[0], args.data());
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    fds_[0] = out[0];
    fds_[1] = err[0];
}

Background::~Background()
{
    if (pid_ > 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    for (int fd : fds_)
        if (fd >= 0)
            close(fd);
}

void Background::pump(int timeout_ms)
{
    struct pollfd p[2] = {{fds_[0], POLLIN, 0}, {fds_[1], POLLIN, 0}};
    if (poll(p, 2, timeout_ms) <= 0)
        return;
    char buf[65536];
    for (int i = 0; i < 2; i++) {
        if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
            continue;
        ssize_t n = read(p[i].fd, buf, sizeof(buf));
        if (n <= 0) {
            close(fds_[i]);
            fds_[i] = -1;
            continue;
        }
        (i == 0 ? r_.out : r_.err).append(buf, size_t(n));
    }
}

bool Background::wait_for_stderr(const std::string& text, std::chrono::milliseconds timeout)
{
    auto end = std::chrono::steady_clock::now() + scaled(timeout);
    while (r_.err.find(text) == std::string::npos) {
        if (std::chrono::steady_clock::now() >= end || (fds_[0] < 0 && fds_[1] < 0))
            return false;
        pump(50);
    }
    return true;
}

Run Background::stop(int sig)
{
    if (pid_ > 0)
        kill(pid_, sig);
    while (fds_[0] >= 0 || fds_[1] >= 0)
        pump(1000);
    int st = 0;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    r_.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r_;
}

}  // namespace gms::test
