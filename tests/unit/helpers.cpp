#include "helpers.hpp"

#include "loader/features.hpp"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace gms::test {

std::string binary() { return GMS_BINARY; }
std::string source_dir() { return GMS_SOURCE_DIR; }

std::string why_no_root()
{
    return geteuid() == 0 ? "" : "needs root (BPF)";
}

std::string why_no_live()
{
    if (geteuid() != 0)
        return "needs root (BPF and /dev/kvm)";
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return std::string("cannot open /dev/kvm: ") + strerror(errno);
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    close(kvm);
    if (vm < 0)
        return std::string("KVM_CREATE_VM: ") + strerror(errno);
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

Run run(const std::vector<std::string>& argv)
{
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
        throw std::runtime_error("pipe");
    pid_t pid = fork();
    if (pid == 0) {
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
    Run r;
    struct pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    int open_fds = 2;
    char buf[65536];
    while (open_fds) {
        poll(fds, 2, -1);
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP)))
                continue;
            ssize_t n = read(fds[i].fd, buf, sizeof(buf));
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            (i == 0 ? r.out : r.err).append(buf, size_t(n));
        }
    }
    int st = 0;
    waitpid(pid, &st, 0);
    r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
}

}  // namespace gms::test
