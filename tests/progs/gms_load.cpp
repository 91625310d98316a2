// Load for the benchmarks (tests/bench/README.md): guest_memfd calls in
// bulk, timed by the program itself, so that a traced run compares with
// an untraced one without gmemscope's own start-up and attach time.
//   gms_load ioctls N   N failing KVM_CREATE_GUEST_MEMFD calls and N failing
//                       fallocates on one gmem fd of one VM
//   gms_load vms N      N VM lifetimes one after another: VM, vCPU, gmem
//                       memslot, guest faults, allocations and punch-holes,
//                       the memslot deleted, everything closed
// Prints "elapsed_ns=T" on stderr (stdout may carry a JSON stream): the
// time from the first call to the last.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "loader/workload/kvm_uapi.h"
#include "loader/workload/workload.hpp"

namespace {

namespace uapi = gms::uapi;
using gms::workload::page_bytes;

[[noreturn]] void die(const char* what)
{
    std::fprintf(stderr, "gms_load: %s: %s\n", what, std::strerror(errno));
    std::exit(2);
}

// Flags no kernel knows make KVM_CREATE_GUEST_MEMFD fail with EINVAL in
// kvm_gmem_create(); fallocate mode 0 (grow the file) fails with
// EOPNOTSUPP in kvm_gmem_fallocate().
void ioctls(long n)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("open /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    uapi::kvm_create_guest_memfd ok{};
    ok.size = 16 * page_bytes;
    int gmem = ioctl(vm, uapi::kvm_create_guest_memfd_ioctl, &ok);
    if (gmem < 0)
        die("KVM_CREATE_GUEST_MEMFD");
    uapi::kvm_create_guest_memfd bad{};
    bad.size = 16 * page_bytes;
    bad.flags = 1ul << 60;
    for (long i = 0; i < n; i++) {
        if (ioctl(vm, uapi::kvm_create_guest_memfd_ioctl, &bad) >= 0)
            die("KVM_CREATE_GUEST_MEMFD with unknown flags succeeded");
        if (fallocate(gmem, 0, 0, long(page_bytes)) == 0)
            die("fallocate mode 0 on gmem succeeded");
    }
    close(gmem);
    close(vm);
    close(kvm);
}

// Each VM: 4 pages faulted by its guest, 2 allocated by fallocate, 2
// punched, the first faulted again; then its gmem memslot deleted and
// every fd closed (~Vm), so the VM ends before the next begins.
void vms(long n)
{
    gms::workload::VmConfig config;
    config.gmem_size_bytes = 16 * page_bytes;
    config.slot_pages = 16;
    for (long k = 0; k < n; k++) {
        gms::workload::Vm vm(config);
        vm.touch(0, 4);
        if (fallocate(vm.gmem_fd(), FALLOC_FL_KEEP_SIZE, long(8 * page_bytes), long(2 * page_bytes)) != 0)
            die("fallocate KEEP_SIZE");
        if (int err = vm.punch(0, 2 * page_bytes))
            errno = -err, die("fallocate PUNCH_HOLE");
        vm.touch(0, 1);
        vm.close_gmem();
    }
}

}  // namespace

int main(int argc, char** argv)
{
    std::string what = argc == 3 ? argv[1] : "";
    long n = argc == 3 ? std::atol(argv[2]) : 0;
    if ((what != "ioctls" && what != "vms") || n <= 0) {
        std::fprintf(stderr, "usage: gms_load ioctls N | vms N\n");
        return 2;
    }
    auto t0 = std::chrono::steady_clock::now();
    try {
        if (what == "ioctls")
            ioctls(n);
        else
            vms(n);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "gms_load: %s\n", e.what());
        return 1;
    }
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "elapsed_ns=%lld\n", static_cast<long long>(ns));
    return 0;
}
