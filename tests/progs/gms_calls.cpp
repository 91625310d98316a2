// A guest_memfd program written outside gmemscope's workload, for the
// tests that compare gmemscope's view with what a program really did.
// It makes the calls each scenario names on the real KVM and writes its
// own log of every call and its result, one line each:
//   call=NAME key=value ... ret=N errno=NAME
// Scenarios:
//   fallocate LOG        fallocate of every mode on a gmem fd, failing ones too
//   vms N LOG            N VMs one after another: create, bind, use, destroy
//   memslots N LOG       one VM with N memslots beside a VM with 2, then say
//                        "ready" on stderr and wait for a signal (the audit
//                        reads them meanwhile)
//   print N              N VMs, printing to stdout without newlines
//   ends LOG             one VM for each kind of file that holds a VM (VM,
//                        vCPU, VM stats, vCPU stats, KVM device, gmem): its
//                        other fds closed first, that one last, its close
//                        timed with CLOCK_MONOTONIC (the recording's clock)
//   files LOG            a VM with a vCPU, both stats files and a KVM
//                        device, then "ready" on stderr and wait for a signal
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "loader/workload/kvm_uapi.h"

namespace {

namespace uapi = gms::uapi;
constexpr unsigned long kPage = 4096;
FILE* g_log = nullptr;

[[noreturn]] void die(const char* what)
{
    std::fprintf(stderr, "gms_calls: %s: %s\n", what, std::strerror(errno));
    std::exit(2);
}

// Logs one call: ret and, when it failed, the errno's name.
long logged(long ret, const std::string& what)
{
    int e = ret < 0 ? errno : 0;
    std::fprintf(g_log, "%s ret=%ld errno=%s\n", what.c_str(), ret < 0 ? -long(e) : ret,
                 e ? strerrorname_np(e) : "0");
    std::fflush(g_log);
    errno = e;
    return ret;
}

int open_kvm()
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("open /dev/kvm");
    return kvm;
}

int create_vm(int kvm, int k)
{
    int vm = int(logged(ioctl(kvm, KVM_CREATE_VM, 0), "call=KVM_CREATE_VM vm_index=" + std::to_string(k)));
    if (vm < 0)
        die("KVM_CREATE_VM");
    return vm;
}

long create_gmem(int vm, unsigned long size, unsigned long flags, int k)
{
    uapi::kvm_create_guest_memfd a{};
    a.size = size;
    a.flags = flags;
    long fd = ioctl(vm, uapi::kvm_create_guest_memfd_ioctl, &a);
    struct stat st {};
    if (fd >= 0)
        fstat(int(fd), &st);
    return logged(fd, "call=KVM_CREATE_GUEST_MEMFD vm_index=" + std::to_string(k) + " size=" + std::to_string(size) +
                          " flags=" + std::to_string(flags) + " ino=" + std::to_string(fd >= 0 ? st.st_ino : 0));
}

long bind(int vm, unsigned slot, unsigned long gpa, unsigned long size, void* uaddr, int gmem, unsigned long off,
          int k)
{
    uapi::kvm_userspace_memory_region2 r{};
    r.slot = slot;
    r.guest_phys_addr = gpa;
    r.memory_size = size;
    r.userspace_addr = reinterpret_cast<unsigned long>(uaddr);
    if (gmem >= 0) {
        r.flags = uapi::kvm_mem_guest_memfd;
        r.guest_memfd = unsigned(gmem);
        r.guest_memfd_offset = off;
    }
    return logged(ioctl(vm, uapi::kvm_set_user_memory_region2_ioctl, &r),
                  "call=KVM_SET_USER_MEMORY_REGION2 vm_index=" + std::to_string(k) + " slot=" + std::to_string(slot) +
                      " gpa=" + std::to_string(gpa) + " size=" + std::to_string(size) +
                      " gmem_offset=" + std::to_string(off));
}

long falloc(int fd, int mode, unsigned long off, unsigned long len, int k)
{
    return logged(fallocate(fd, mode, long(off), long(len)),
                  "call=fallocate vm_index=" + std::to_string(k) + " mode=" + std::to_string(mode) +
                      " offset=" + std::to_string(off) + " len=" + std::to_string(len));
}

// fallocate of every mode on a gmem fd of 16 pages: what succeeds and what fails.
int scenario_fallocate()
{
    int kvm = open_kvm();
    int vm = create_vm(kvm, 0);
    constexpr unsigned long kPages = 16, kSize = kPages * kPage;
    // failed creations: flags no kernel knows (above 2^53: JSON readers
    // round such a number), and size 0
    create_gmem(vm, kSize, (1ul << 60) | 1, 0);
    create_gmem(vm, 0, uapi::guest_memfd_flag_mmap, 0);
    int gmem = int(create_gmem(vm, kSize, uapi::guest_memfd_flag_mmap | uapi::guest_memfd_flag_init_shared, 0));
    if (gmem < 0)
        die("KVM_CREATE_GUEST_MEMFD");
    void* map = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0);
    if (map == MAP_FAILED)
        die("mmap gmem");
    bind(vm, 1, 1ul << 30, kSize, map, gmem, 0, 0);
    // a failed bind: a gpa that is not page aligned
    bind(vm, 2, (1ul << 31) + 1, kSize, map, gmem, 0, 0);
    const int keep = FALLOC_FL_KEEP_SIZE, punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    // allocations (KEEP_SIZE alone): pages enter the page cache
    falloc(gmem, keep, 0, 4 * kPage, 0);
    falloc(gmem, keep, 8 * kPage, 2 * kPage, 0);
    // punch-holes
    falloc(gmem, punch, 0, kPage, 0);
    falloc(gmem, punch, kPage, 2 * kPage, 0);
    falloc(gmem, punch, 8 * kPage, 2 * kPage, 0);
    // failures: mode 0 (grows the file), punch without KEEP_SIZE, modes
    // gmem does not implement, unaligned ranges, ranges past the end
    falloc(gmem, 0, 0, kPage, 0);
    falloc(gmem, FALLOC_FL_PUNCH_HOLE, 0, kPage, 0);
    falloc(gmem, FALLOC_FL_ZERO_RANGE | keep, 0, kPage, 0);
    falloc(gmem, FALLOC_FL_COLLAPSE_RANGE, 0, kPage, 0);
    falloc(gmem, FALLOC_FL_INSERT_RANGE, 0, kPage, 0);
    falloc(gmem, FALLOC_FL_UNSHARE_RANGE | keep, 0, kPage, 0);
    falloc(gmem, punch, 1, kPage, 0);
    falloc(gmem, punch, 0, kPage + 1, 0);
    falloc(gmem, keep, 3, kPage, 0);
    falloc(gmem, keep, kSize, kPage, 0);
    falloc(gmem, keep, 0, 2 * kSize, 0);
    falloc(gmem, punch, 0, (1ul << 60) + kPage, 0);
    munmap(map, kSize);
    close(gmem);
    close(vm);
    close(kvm);
    return 0;
}

// VM k: k % 3 + 1 gmem memslots of k % 4 + 1 pages each, at gpa
// (k + 1) GiB + i * 16 MiB, each on its own part of one gmem file; a
// page of each slot allocated and punched; then everything closed, the
// gmem fd first, so that closing the VM fd drops the VM's last reference.
int scenario_vms(int n, bool print)
{
    int kvm = open_kvm();
    for (int k = 0; k < n; k++) {
        if (print)
            std::printf("{\"vm\":%d,", k);   // no newline: glued to whatever comes next
        int vm = create_vm(kvm, k);
        unsigned slots = unsigned(k % 3 + 1), pages = unsigned(k % 4 + 1);
        unsigned long slot_bytes = pages * kPage, size = slots * slot_bytes;
        int gmem = int(create_gmem(vm, size, uapi::guest_memfd_flag_mmap | uapi::guest_memfd_flag_init_shared, k));
        if (gmem < 0)
            die("KVM_CREATE_GUEST_MEMFD");
        char* map = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0));
        if (map == MAP_FAILED)
            die("mmap gmem");
        for (unsigned i = 0; i < slots; i++)
            if (bind(vm, i + 1, (unsigned long)(k + 1) * (1ul << 30) + i * (16ul << 20), slot_bytes,
                     map + i * slot_bytes, gmem, i * slot_bytes, k) < 0)
                die("KVM_SET_USER_MEMORY_REGION2");
        for (unsigned i = 0; i < slots; i++) {
            falloc(gmem, FALLOC_FL_KEEP_SIZE, i * slot_bytes, kPage, k);
            falloc(gmem, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, i * slot_bytes, kPage, k);
        }
        munmap(map, size);
        logged(close(gmem), "call=close vm_index=" + std::to_string(k) + " what=gmem");
        logged(close(vm), "call=close vm_index=" + std::to_string(k) + " what=vm");
        if (print) {
            std::printf("\"done\":true}");
            std::fflush(stdout);
        }
    }
    close(kvm);
    return 0;
}

// The fds of one VM: the VM's, then those of the files asked for.
struct VmFiles {
    int vm = -1, vcpu = -1, vm_stats = -1, vcpu_stats = -1, device = -1, gmem = -1;
};

VmFiles make_vm_files(int kvm, int k, bool vcpu, bool vm_stats, bool vcpu_stats, bool device, bool gmem)
{
    VmFiles f;
    f.vm = create_vm(kvm, k);
    std::string at = " vm_index=" + std::to_string(k);
    if (vcpu || vcpu_stats)
        f.vcpu = int(logged(ioctl(f.vm, KVM_CREATE_VCPU, 0), "call=KVM_CREATE_VCPU" + at));
    if (vm_stats)
        f.vm_stats = int(logged(ioctl(f.vm, KVM_GET_STATS_FD, 0), "call=KVM_GET_STATS_FD" + at + " of=vm"));
    if (vcpu_stats)
        f.vcpu_stats = int(logged(ioctl(f.vcpu, KVM_GET_STATS_FD, 0), "call=KVM_GET_STATS_FD" + at + " of=vcpu"));
    if (device) {
        kvm_create_device d{};
        d.type = KVM_DEV_TYPE_VFIO;
        f.device = logged(ioctl(f.vm, KVM_CREATE_DEVICE, &d), "call=KVM_CREATE_DEVICE" + at + " type=vfio") < 0
                       ? -1
                       : int(d.fd);
    }
    if (gmem)
        f.gmem = int(create_gmem(f.vm, kPage, 0, k));
    return f;
}

uint64_t monotonic_ns()
{
    timespec t{};
    clock_gettime(CLOCK_MONOTONIC, &t);
    return uint64_t(t.tv_sec) * 1000000000u + uint64_t(t.tv_nsec);
}

// VM k ends when its `last` file closes: every other fd of it first.
int scenario_ends()
{
    int kvm = open_kvm();
    const std::vector<std::string> kinds = {"vm", "vcpu", "vm_stats", "vcpu_stats", "kvm_device", "gmem"};
    for (int k = 0; k < int(kinds.size()); k++) {
        const std::string& kind = kinds[size_t(k)];
        VmFiles f = make_vm_files(kvm, k, kind == "vcpu", kind == "vm_stats", kind == "vcpu_stats",
                                  kind == "kvm_device", kind == "gmem");
        std::vector<std::pair<std::string, int>> fds = {{"vm", f.vm},          {"vcpu", f.vcpu},
                                                        {"vm_stats", f.vm_stats}, {"vcpu_stats", f.vcpu_stats},
                                                        {"kvm_device", f.device}, {"gmem", f.gmem}};
        int last = -1;
        for (const auto& [name, fd] : fds) {
            if (name == kind)
                last = fd;
            else if (fd >= 0)
                close(fd);
        }
        if (last < 0)
            die(("no " + kind + " fd").c_str());
        uint64_t before = monotonic_ns();
        int r = close(last);
        uint64_t after = monotonic_ns();
        logged(r, "call=close vm_index=" + std::to_string(k) + " what=" + kind + " fd=" + std::to_string(last) +
                      " before_ns=" + std::to_string(before) + " after_ns=" + std::to_string(after));
    }
    close(kvm);
    return 0;
}

// A VM held by every kind of file but gmem, until a signal ends the process.
int scenario_files()
{
    int kvm = open_kvm();
    make_vm_files(kvm, 0, true, true, true, true, false);
    std::fflush(g_log);
    std::fprintf(stderr, "ready\n");
    for (;;)
        pause();
}

// One VM with n memslots of one page of anonymous memory each (the
// legacy ioctl: no gmem), and a VM with 2 gmem memslots; held until a
// signal ends the process.
int scenario_memslots(int n)
{
    int kvm = open_kvm();
    int big = create_vm(kvm, 0);
    char* mem = static_cast<char*>(mmap(nullptr, (unsigned long)n * kPage, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (mem == MAP_FAILED)
        die("mmap");
    int made = 0;
    for (int i = 0; i < n; i++) {
        kvm_userspace_memory_region r{};
        r.slot = unsigned(i);
        r.guest_phys_addr = (unsigned long)i * kPage;
        r.memory_size = kPage;
        r.userspace_addr = reinterpret_cast<unsigned long>(mem + (unsigned long)i * kPage);
        if (ioctl(big, KVM_SET_USER_MEMORY_REGION, &r) != 0)
            break;
        made++;
    }
    std::fprintf(g_log, "call=memslots vm_index=0 made=%d asked=%d ret=%d errno=%s\n", made, n, made == n ? 0 : -errno,
                 made == n ? "0" : strerrorname_np(errno));
    int small = create_vm(kvm, 1);
    int gmem = int(create_gmem(small, 2 * kPage, uapi::guest_memfd_flag_mmap | uapi::guest_memfd_flag_init_shared, 1));
    char* map = static_cast<char*>(mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, gmem, 0));
    if (gmem < 0 || map == MAP_FAILED)
        die("gmem");
    bind(small, 1, 1ul << 30, kPage, map, gmem, 0, 1);
    bind(small, 2, 2ul << 30, kPage, map + kPage, gmem, kPage, 1);
    std::fflush(g_log);
    std::fprintf(stderr, "ready\n");
    for (;;)
        pause();
}

}  // namespace

int main(int argc, char** argv)
{
    std::string what = argc > 1 ? argv[1] : "";
    auto open_log = [&](int at) {
        g_log = argc > at ? std::fopen(argv[at], "w") : nullptr;
        if (!g_log)
            die("opening the log");
    };
    if (what == "fallocate" && argc == 3) {
        open_log(2);
        return scenario_fallocate();
    }
    if (what == "vms" && argc == 4) {
        open_log(3);
        return scenario_vms(std::atoi(argv[2]), false);
    }
    if (what == "memslots" && argc == 4) {
        open_log(3);
        return scenario_memslots(std::atoi(argv[2]));
    }
    if (what == "ends" && argc == 3) {
        open_log(2);
        return scenario_ends();
    }
    if (what == "files" && argc == 3) {
        open_log(2);
        return scenario_files();
    }
    if (what == "print" && argc == 3) {
        g_log = std::fopen("/dev/null", "w");
        return scenario_vms(std::atoi(argv[2]), true);
    }
    std::fprintf(stderr, "usage: gms_calls fallocate LOG | vms N LOG | memslots N LOG | ends LOG | files LOG | print N\n");
    return 2;
}
