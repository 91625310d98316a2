// Enforcement's index (bpf/veto.bpf.c) on this machine's kernel: its
// entries leave with their process, and maps and unmaps racing on two
// CPUs leave it exact. The index is driven through its own entry point
// (SEC("syscall") enforce_index_op, the code the VFIO/iommufd map and
// unmap ioctl exits run), which runs in the calling thread: its process's
// mm owns the mappings, its CPU is the one the thread is pinned to.
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include <bpf/bpf.h>
#include <catch2/catch.hpp>

#include "helpers.hpp"
#include "loader/capture/tracer.hpp"
#include "loader/enforce/enforce.hpp"
#include "loader/workload/workload.hpp"

namespace {

constexpr uint32_t kFd = 77;

// Enforcement as `enforce --audit` sets it up where the BPF LSM cannot run.
struct Index {
    Index() : features(gms::Features::probe()), tracer(features, options()) {}
    static gms::TraceOptions options()
    {
        gms::TraceOptions o;
        o.veto_mode = GMS_VETO_AUDIT_SYSCALL;
        o.veto_only = true;
        o.wakeup_bytes = o.ringbuf_bytes;
        return o;
    }
    int op_fd() { return tracer.prog_fd("enforce_index_op"); }
    int64_t map(const void* vaddr, uint64_t bytes, uint64_t iova)
    {
        gms_index_op op{};
        op.op = GMS_INDEX_MAP;
        op.kind = GMS_PIN_VFIO;
        op.fd = kFd;
        op.vaddr = reinterpret_cast<uint64_t>(vaddr);
        op.bytes = bytes;
        op.iova = iova;
        return gms::index_op(op_fd(), op);
    }
    int64_t unmap(uint64_t iova, uint64_t bytes)
    {
        gms_index_op op{};
        op.op = GMS_INDEX_UNMAP;
        op.kind = GMS_PIN_VFIO;
        op.fd = kFd;
        op.bytes = bytes;
        op.iova = iova;
        return gms::index_op(op_fd(), op);
    }
    // Entries in one of the index's hash maps.
    size_t entries(const char* map)
    {
        int fd = tracer.map_fd(map);
        std::vector<char> key(64), next(64);
        size_t n = 0;
        for (void* prev = nullptr; bpf_map_get_next_key(fd, prev, next.data()) == 0; prev = key.data()) {
            key = next;
            n++;
        }
        return n;
    }
    std::vector<gms::PinEntry> pins_of(uint32_t tgid)
    {
        std::vector<gms::PinEntry> out;
        for (const auto& p : gms::read_pins(tracer.map_fd("idx_maps")))
            if (p.pin.tgid == tgid)
                out.push_back(p);
        return out;
    }
    size_t owners_of(uint32_t tgid)
    {
        size_t n = 0;
        for (const auto& o : gms::read_index_owners(tracer.map_fd("idx_state")))
            n += o.key == tgid || o.state.tgid == tgid;
        return n;
    }
    gms::Features features;
    gms::Tracer tracer;
};

using gms::test::Buffer;

}  // namespace

TEST_CASE("enforce's index: a process's DMA mappings and the ranges declared for it leave with the process, not "
          "with one of its threads",
          "[enforce][index]")
{
    GMS_REQUIRE_ROOT();
    Index ix;
    int up[2], down[2];
    REQUIRE(pipe(up) == 0);
    REQUIRE(pipe(down) == 0);
    pid_t test = getpid(), child = fork();
    if (child == 0) {
        gms::test::die_with_test(test);
        // Three mappings from the main thread, one from a thread that then exits.
        Buffer buf(16);
        char ok = 1;
        for (uint64_t j = 0; j < 3; j++)
            ok &= ix.map(buf.page(2 * j), 4096, (1ull << 32) + j * 4096) == 0;
        std::thread([&] { ok &= ix.map(buf.page(8), 8 * 4096, 1ull << 33) == 0; }).join();
        ok &= write(up[1], &ok, 1) == 1;
        char go;
        ok &= read(down[0], &go, 1) == 1;
        _exit(ok ? 0 : 1);
    }
    gms::declare_range(ix.op_fd(), uint32_t(child), 0x100, 0x110, "child");
    char ok = 0;
    REQUIRE(read(up[0], &ok, 1) == 1);
    REQUIRE(ok == 1);
    // The thread's exit took nothing: the process lives on.
    CHECK(ix.pins_of(uint32_t(child)).size() == 5);
    CHECK(ix.owners_of(uint32_t(child)) == 2);   // its mm (DMA) and its tgid (declared)
    CHECK(ix.entries("idx_tgids") == 1);
    CHECK(ix.entries("idx_nodes") > 0);
    REQUIRE(write(down[1], &ok, 1) == 1);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // Gone with it: a later process with its pid or its mm_struct's address inherits nothing.
    CHECK(ix.pins_of(uint32_t(child)).empty());
    CHECK(ix.owners_of(uint32_t(child)) == 0);
    CHECK(ix.entries("idx_tgids") == 0);
    CHECK(ix.entries("idx_starts") == 0);
    CHECK(ix.entries("idx_nodes") == 0);
    for (int fd : {up[0], up[1], down[0], down[1]})
        close(fd);
}

TEST_CASE("enforce's index: maps and unmaps racing on two CPUs through the same nodes leave it exact, and empty "
          "once all are unmapped",
          "[enforce][index]")
{
    GMS_REQUIRE_LIVE();
    cpu_set_t allowed;
    REQUIRE(sched_getaffinity(0, sizeof(allowed), &allowed) == 0);
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; c++)
        if (CPU_ISSET(c, &allowed))
            cpus.push_back(c);
    GMS_SKIP_IF(cpus.size() < 2 ? "one CPU: nothing runs at the same time" : "");

    constexpr uint64_t kPages = 512, kRounds = 40, kGpa = 0x100000000ull;
    Buffer buf(kPages);
    Index ix;
    gms::workload::Vm vm(gms::workload::Vm::UserMemory{buf.base, kPages, kGpa});
    // Thread k maps the pages of its parity one by one (neighbours share
    // every node with the other thread's), and thread 1 also a mapping over
    // all of them (pieces and counts on the same nodes at every level);
    // all unmapped each round but thread 0's in the last.
    auto iova = [](uint64_t k, uint64_t page) { return ((k + 1) << 36) + page * 4096; };
    std::vector<int64_t> failures(2, 0);
    auto worker = [&](uint64_t k) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[k], &one);
        sched_setaffinity(0, sizeof(one), &one);
        for (uint64_t round = 0; round < kRounds; round++) {
            if (k == 1)
                failures[k] += ix.map(buf.page(1), (kPages - 2) * 4096, 3ull << 36) != 0;
            for (uint64_t p = k; p < kPages; p += 2)
                failures[k] += ix.map(buf.page(p), 4096, iova(k, p)) != 0;
            if (k == 1)
                failures[k] += ix.unmap(3ull << 36, (kPages - 2) * 4096) != 1;
            if (k == 0 && round == kRounds - 1)
                break;
            for (uint64_t p = k; p < kPages; p += 2)
                failures[k] += ix.unmap(iova(k, p), 4096) != 1;
        }
    };
    std::thread t0(worker, 0), t1(worker, 1);
    t0.join();
    t1.join();
    CHECK(failures[0] == 0);
    CHECK(failures[1] == 0);
    CHECK(ix.pins_of(uint32_t(getpid())).size() == kPages / 2);

    // Every even page is over a mapping, no odd one is.
    for (uint64_t p = 0; p < kPages; p++)
        vm.convert(gms::workload::ConvertKind::vm_attributes, kGpa + p * 4096, 4096, true);
    std::vector<gms_veto_event> vetoes;
    ix.tracer.consume([&](const gms::Event& e) {
        if (e.type() == GMS_EV_VETO)
            vetoes.push_back(std::get<gms_veto_event>(e.rec));
    });
    REQUIRE(vetoes.size() == kPages / 2);
    for (uint64_t j = 0; j < vetoes.size(); j++) {
        INFO("page " << 2 * j);
        CHECK(vetoes[j].first == kGpa / 4096 + 2 * j);
        CHECK(vetoes[j].pin.vaddr == reinterpret_cast<uint64_t>(buf.page(2 * j)));
        CHECK(vetoes[j].pin.iova == iova(0, 2 * j));
    }
    // No count was lost or left over: the last unmaps free every node.
    for (uint64_t p = 0; p < kPages; p += 2)
        CHECK(ix.unmap(iova(0, p), 4096) == 1);
    CHECK(ix.entries("idx_nodes") == 0);
    CHECK(ix.entries("idx_starts") == 0);
    CHECK(ix.entries("idx_maps") == 0);
}
