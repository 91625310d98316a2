// bench_veto: the cost of one enforcement decision (bpf/veto.bpf.h) for a
// conversion of 1 GiB and of 1 TiB, on the worst case the decision allows:
// 64 memslots in the range, 64 declared ranges, none overlapping, so every
// memslot and every range is looked at and the conversion passes.
//
// It runs where the BPF LSM cannot (the development machine): the same
// decision, in sys_enter_ioctl (enforce --audit's portable tier). The cost
// is the program's run time from kernel.bpf_stats_enabled, with the
// decision on, minus the same program with it off; and the ioctl's wall
// time against the untraced ioctl in the same run.
//
//   build/bench_veto [iterations]     (root; prints one JSON line per case)
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/kvm.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "loader/enforce/enforce.hpp"
#include "loader/capture/tracer.hpp"
#include "loader/workload/workload.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kSlots = 64;

struct Stats {
    uint64_t run_ns = 0, runs = 0;
};

Stats prog_stats(int fd)
{
    bpf_prog_info info{};
    __u32 len = sizeof(info);
    bpf_obj_get_info_by_fd(fd, &info, &len);
    return {info.run_time_ns, info.run_cnt};
}

// Wall ns per KVM_SET_MEMORY_ATTRIBUTES of `bytes` to private from gpa 0.
double convert_ns(int vm_fd, uint64_t bytes, uint64_t n)
{
    struct {
        __u64 address, size, attributes, flags;
    } a{0, bytes, 1ull << 3, 0};
    auto t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++)
        ioctl(vm_fd, 0x4020aed2, &a);   // KVM_SET_MEMORY_ATTRIBUTES
    return double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()) / double(n);
}

}  // namespace

int main(int argc, char** argv)
{
    uint64_t n = argc > 1 ? std::stoull(argv[1]) : 20000;
    std::ofstream("/proc/sys/kernel/bpf_stats_enabled") << 1;
    auto features = gms::Features::probe();

    // slot 0, the gmem slot at 512 MiB, and 62 one-page slots above it: all 64 below 1 GiB.
    gms::workload::VmConfig cfg;
    cfg.slot_pages = 1;
    cfg.gmem_size_bytes = 4096;
    cfg.base_gpa = 0x20000000;
    gms::workload::Vm vm(cfg);
    void* mem = mmap(nullptr, kSlots * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (uint32_t i = 0; i < kSlots - 2; i++) {
        kvm_userspace_memory_region r{};
        r.slot = 2 + i;
        r.guest_phys_addr = 0x21000000 + uint64_t(i) * 0x100000;
        r.memory_size = 4096;
        r.userspace_addr = reinterpret_cast<uint64_t>(mem) + i * 4096;
        if (ioctl(vm.vm_fd(), KVM_SET_USER_MEMORY_REGION, &r))
            return perror("KVM_SET_USER_MEMORY_REGION"), 1;
    }

    for (uint32_t mode : {uint32_t(GMS_VETO_OFF), uint32_t(GMS_VETO_AUDIT_SYSCALL)}) {
        gms::TraceOptions o;
        o.hooks = {"kvm.set_mem_attributes"};
        o.tgids = {getpid()};
        o.veto_mode = mode;
        o.ringbuf_bytes = 1 << 20;
        double untraced_1g = convert_ns(vm.vm_fd(), 1ull << 30, n);
        gms::Tracer t(features, o);
        if (mode != GMS_VETO_OFF)
            for (uint32_t i = 0; i < 64; i++)   // far from the conversions: every one is compared
                gms::declare_range(t.map_fd("declared"), uint32_t(getpid()), 0x100000000ull + 2 * i,
                                   0x100000000ull + 2 * i + 1, "bench");
        int fd = t.prog_fd("syscalls_ioctl_enter");
        for (uint64_t bytes : {1ull << 30, 1ull << 40}) {
            Stats before = prog_stats(fd);
            double wall = convert_ns(vm.vm_fd(), bytes, n);
            Stats after = prog_stats(fd);
            t.consume([](const gms::Event&) {});
            double prog_ns = double(after.run_ns - before.run_ns) / double(after.runs - before.runs);
            fmt::print("{}\n", nlohmann::json{{"type", "bench_veto"},
                                              {"decision", mode == GMS_VETO_OFF ? "off" : "on"},
                                              {"range_bytes", bytes},
                                              {"memslots", kSlots},
                                              {"declared_ranges", mode == GMS_VETO_OFF ? 0 : 64},
                                              {"iterations", n},
                                              {"enter_program_ns", prog_ns},
                                              {"ioctl_ns", wall},
                                              {"untraced_ioctl_ns", untraced_1g}}
                                   .dump());
        }
    }
    return 0;
}
