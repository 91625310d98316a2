// bench_veto: the cost of one enforcement decision (bpf/veto.bpf.h) and of
// keeping its index, against the number of DMA mappings of the VM's process
// and the number of memslots of the VM.
//
// One case: a buffer of P pages is the VM's memory in M equal memslots;
// N one-page DMA mappings are spread over it (every P/N pages), indexed
// for this process (its mm, as the VFIO/iommufd map ioctl exits index
// them). Then KVM_SET_MEMORY_ATTRIBUTES to private of one page: "miss" is
// the page beside the middle mapping (the whole query runs and the
// conversion passes), "hit" is that mapping's page (would-veto).
//
// It runs where the BPF LSM cannot (the development machine): the same
// decision, in sys_enter_ioctl (enforce --audit's portable tier). The
// decision's cost is the program's run time (kernel.bpf_stats_enabled)
// with the decision on, against the same program with it off; the ioctl's
// wall time is against the untraced ioctl in the same run. This kernel has
// no VFIO, so mappings are indexed through the index's own entry point
// (SEC("syscall") enforce_index_op, the code the map/unmap ioctl exits
// run): index_map_ns and index_unmap_ns are its cost per mapping, against
// the same entry point doing nothing (index_noop_ns); *_program_ns are
// the program's own run time (kernel.bpf_stats_enabled). An ioctl no one
// watches (FIONREAD on a pipe) is timed untraced and with the mappings
// indexed: what enforcement costs every other ioctl on the machine.
//
//   build/bench_veto [--mappings N[,N...]] [--memslots M[,M...]] [iterations]
//   (root; one JSON line per case, schemas/bench_veto.schema.json; default
//   the table 64,1024,65536 x 16,256,4096)
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/kvm.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "loader/enforce/enforce.hpp"
#include "loader/capture/tracer.hpp"
#include "loader/workload/workload.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kBaseGpa = 0x100000000ull;

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

// Wall ns per FIONREAD on a pipe: an ioctl neither tracing nor enforcement looks at.
double unwatched_ns(uint64_t n)
{
    int p[2];
    if (pipe(p))
        throw std::runtime_error(fmt::format("pipe: {}", strerror(errno)));
    int avail = 0;
    auto t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++)
        ioctl(p[0], FIONREAD, &avail);
    double ns = double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()) / double(n);
    close(p[0]);
    close(p[1]);
    return ns;
}

double ns_since(Clock::time_point t0, uint64_t n)
{
    return double(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()) / double(n);
}

// Wall ns per KVM_SET_MEMORY_ATTRIBUTES of one page at gpa to private.
double convert_ns(int vm_fd, uint64_t gpa, uint64_t n)
{
    struct {
        __u64 address, size, attributes, flags;
    } a{gpa, 4096, 1ull << 3, 0};
    auto t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++)
        ioctl(vm_fd, 0x4020aed2, &a);   // KVM_SET_MEMORY_ATTRIBUTES
    return ns_since(t0, n);
}

std::vector<uint64_t> parse_list(const std::string& s)
{
    std::vector<uint64_t> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, ','))
        out.push_back(std::stoull(item));
    return out;
}

gms::TraceOptions options(uint32_t mode)
{
    gms::TraceOptions o;
    o.hooks = {"kvm.set_mem_attributes"};
    o.tgids = {getpid()};
    o.veto_mode = mode;
    o.ringbuf_bytes = 1 << 22;
    return o;
}

struct Case {
    uint64_t mappings, memslots, iterations;
};

void run_case(const gms::Features& features, const Case& c)
{
    uint64_t stride = 2;
    uint64_t pages = std::max(c.mappings * stride, c.memslots);
    pages = (pages + c.memslots - 1) / c.memslots * c.memslots;
    stride = pages / c.mappings;
    uint64_t slot_pages = pages / c.memslots;

    gms::workload::VmConfig cfg;
    cfg.slot_pages = 1;
    cfg.gmem_size_bytes = 4096;
    cfg.base_gpa = 0x20000000;
    gms::workload::Vm vm(cfg);
    auto* buf = static_cast<std::byte*>(
        mmap(nullptr, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (buf == MAP_FAILED)
        throw std::runtime_error(fmt::format("mmap {} pages: {}", pages, strerror(errno)));
    for (uint64_t i = 0; i < c.memslots; i++) {
        kvm_userspace_memory_region r{};
        r.slot = uint32_t(2 + i);
        r.guest_phys_addr = kBaseGpa + i * slot_pages * 4096;
        r.memory_size = slot_pages * 4096;
        r.userspace_addr = reinterpret_cast<uint64_t>(buf + i * slot_pages * 4096);
        if (ioctl(vm.vm_fd(), KVM_SET_USER_MEMORY_REGION, &r))
            throw std::runtime_error(fmt::format("KVM_SET_USER_MEMORY_REGION slot {}: {}", r.slot, strerror(errno)));
    }
    uint64_t mid = c.mappings / 2 * stride;   // the page of the middle mapping
    uint64_t gpa_hit = kBaseGpa + mid * 4096, gpa_miss = gpa_hit + 4096;

    // Decision off: what sys_enter_ioctl costs without it.
    double untraced_ns = convert_ns(vm.vm_fd(), gpa_miss, c.iterations);
    double untraced_unwatched_ns = unwatched_ns(c.iterations);
    double off_ns = 0, off_wall_ns = 0;
    {
        gms::Tracer t(features, options(GMS_VETO_OFF));
        int fd = t.prog_fd("syscalls_ioctl_enter");
        Stats before = prog_stats(fd);
        off_wall_ns = convert_ns(vm.vm_fd(), gpa_miss, c.iterations);
        Stats after = prog_stats(fd);
        t.consume([](const gms::Event&) {});
        off_ns = double(after.run_ns - before.run_ns) / double(after.runs - before.runs);
    }

    gms::Tracer t(features, options(GMS_VETO_AUDIT_SYSCALL));
    int op_fd = t.prog_fd("enforce_index_op");
    auto op = [&](uint32_t what, uint64_t page) {
        gms_index_op o{};
        o.op = what;
        o.kind = GMS_PIN_VFIO;
        o.fd = 1000;
        o.vaddr = reinterpret_cast<uint64_t>(buf) + page * 4096;
        o.bytes = 4096;
        o.iova = 0x100000000ull + page * 4096;
        return gms::index_op(op_fd, o);
    };
    // Wall time per call, and the program's run time (the kernel's own
    // count, steadier on a loaded machine).
    Stats s0 = prog_stats(op_fd);
    auto t0 = Clock::now();
    for (uint64_t j = 0; j < c.iterations; j++)
        op(0, 0);   // no such op: the entry point's own cost
    double noop_ns = ns_since(t0, c.iterations);
    Stats s1 = prog_stats(op_fd);
    double noop_prog_ns = double(s1.run_ns - s0.run_ns) / double(s1.runs - s0.runs);
    t0 = Clock::now();
    for (uint64_t j = 0; j < c.mappings; j++)
        if (op(GMS_INDEX_MAP, j * stride) != 0)
            throw std::runtime_error(fmt::format("mapping {} of {} not indexed", j, c.mappings));
    double map_ns = ns_since(t0, c.mappings);
    Stats s2 = prog_stats(op_fd);
    double map_prog_ns = double(s2.run_ns - s1.run_ns) / double(s2.runs - s1.runs);
    int enter_fd = t.prog_fd("syscalls_ioctl_enter"), exit_fd = t.prog_fd("syscalls_ioctl_exit");
    Stats e0 = prog_stats(enter_fd), x0 = prog_stats(exit_fd);
    double enforced_unwatched_ns = unwatched_ns(c.iterations);
    Stats e1 = prog_stats(enter_fd), x1 = prog_stats(exit_fd);
    double unwatched_programs_ns = double(e1.run_ns - e0.run_ns + x1.run_ns - x0.run_ns) / double(c.iterations);

    int fd = t.prog_fd("syscalls_ioctl_enter");
    for (bool hit : {false, true}) {
        uint64_t gpa = hit ? gpa_hit : gpa_miss;
        Stats before = prog_stats(fd);
        double wall = convert_ns(vm.vm_fd(), gpa, c.iterations);
        Stats after = prog_stats(fd);
        uint64_t vetoes = 0;
        t.consume([&](const gms::Event& e) { vetoes += e.type() == GMS_EV_VETO; });
        double prog_ns = double(after.run_ns - before.run_ns) / double(after.runs - before.runs);
        fmt::print("{}\n", nlohmann::json{{"type", "bench_veto"},
                                          {"case", hit ? "hit" : "miss"},
                                          {"mappings", c.mappings},
                                          {"memslots", c.memslots},
                                          {"iterations", c.iterations},
                                          {"would_veto", vetoes},
                                          {"decision_program_ns", prog_ns},
                                          {"program_off_ns", off_ns},
                                          {"decision_ns", prog_ns - off_ns},
                                          {"ioctl_ns", wall},
                                          {"ioctl_decision_off_ns", off_wall_ns},
                                          {"untraced_ioctl_ns", untraced_ns},
                                          {"ioctl_ratio", wall / untraced_ns},
                                          {"index_map_ns", map_ns - noop_ns},
                                          {"index_map_program_ns", map_prog_ns - noop_prog_ns},
                                          {"unwatched_ioctl_ns", enforced_unwatched_ns},
                                          {"unwatched_programs_ns", unwatched_programs_ns},
                                          {"untraced_unwatched_ioctl_ns", untraced_unwatched_ns},
                                          {"index_noop_ns", noop_ns}}
                               .dump());
        std::fflush(stdout);
    }
    // Unmapping every mapping, as VFIO_IOMMU_UNMAP_DMA of each would.
    Stats u0 = prog_stats(op_fd);
    t0 = Clock::now();
    for (uint64_t j = 0; j < c.mappings; j++)
        if (op(GMS_INDEX_UNMAP, j * stride) != 1)
            throw std::runtime_error(fmt::format("mapping {} was not removed", j));
    double unmap_ns = ns_since(t0, c.mappings);
    Stats u1 = prog_stats(op_fd);
    double unmap_prog_ns = double(u1.run_ns - u0.run_ns) / double(u1.runs - u0.runs);
    fmt::print("{}\n", nlohmann::json{{"type", "bench_veto"},
                                      {"case", "unmap"},
                                      {"mappings", c.mappings},
                                      {"memslots", c.memslots},
                                      {"iterations", c.mappings},
                                      {"index_unmap_ns", unmap_ns - noop_ns},
                                      {"index_unmap_program_ns", unmap_prog_ns - noop_prog_ns},
                                      {"index_noop_ns", noop_ns}}
                           .dump());
    munmap(buf, pages * 4096);
}

}  // namespace

int main(int argc, char** argv)
{
    std::vector<uint64_t> mappings{64, 1024, 65536}, memslots{16, 256, 4096};
    uint64_t n = 20000;
    try {
        for (int i = 1; i < argc; i++) {
            std::string a = argv[i];
            if (a == "--mappings" && i + 1 < argc)
                mappings = parse_list(argv[++i]);
            else if (a == "--memslots" && i + 1 < argc)
                memslots = parse_list(argv[++i]);
            else
                n = std::stoull(a);
        }
    } catch (const std::exception&) {
        fmt::print(stderr, "usage: bench_veto [--mappings N[,N...]] [--memslots M[,M...]] [iterations]\n");
        return 2;
    }
    std::ofstream("/proc/sys/kernel/bpf_stats_enabled") << 1;
    auto features = gms::Features::probe();
    try {
        for (uint64_t m : mappings)
            for (uint64_t s : memslots)
                run_case(features, {m, s, n});
    } catch (const std::exception& e) {
        fmt::print(stderr, "bench_veto: {}\n", e.what());
        return 1;
    }
    return 0;
}
