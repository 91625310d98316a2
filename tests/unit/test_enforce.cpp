// Enforcement (`gmemscope enforce`, bpf/lsm.bpf.c, bpf/veto.bpf.h) on real
// kernels: on the host lane the BPF LSM is refused, so enforce refuses
// and --audit decides on sys_enter_ioctl against declared ranges; in the
// VM lane lsm/file_ioctl vetoes conversions over VFIO-mapped memslots.
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/kvm.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <thread>

#include <bpf/bpf.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "ioctls.h"
#include "loader/enforce/enforce.hpp"
#include "loader/capture/tracer.hpp"
#include "loader/workload/workload.hpp"

namespace {

using gms::workload::ConvertKind;

struct Veto {
    explicit Veto(uint32_t mode, int err = EBUSY, uint32_t max_mappings = GMS_IDX_MAX_MAPPINGS, bool fail_open = false)
        : features(gms::Features::probe()), tracer(features, options(mode, err, max_mappings, fail_open))
    {
    }
    static gms::TraceOptions options(uint32_t mode, int err, uint32_t max_mappings, bool fail_open)
    {
        gms::TraceOptions o;
        o.veto_mode = mode;
        o.veto_errno = err;
        o.veto_only = true;
        o.wakeup_bytes = o.ringbuf_bytes;
        o.index_max_mappings = max_mappings;
        o.veto_fail_open = fail_open;
        return o;
    }
    // The index's entry point, as the VFIO map/unmap ioctl exits use the index
    // (for kernels without VFIO): 0 / -errno, or how many were removed.
    int64_t map(const void* vaddr, uint64_t bytes, uint64_t iova, uint32_t fd = 77)
    {
        gms_index_op op{};
        op.op = GMS_INDEX_MAP;
        op.kind = GMS_PIN_VFIO;
        op.fd = fd;
        op.vaddr = reinterpret_cast<uint64_t>(vaddr);
        op.bytes = bytes;
        op.iova = iova;
        return gms::index_op(tracer.prog_fd("enforce_index_op"), op);
    }
    int64_t unmap(uint64_t iova, uint64_t bytes, uint32_t fd = 77)
    {
        gms_index_op op{};
        op.op = GMS_INDEX_UNMAP;
        op.kind = GMS_PIN_VFIO;
        op.fd = fd;
        op.bytes = bytes;
        op.iova = iova;
        return gms::index_op(tracer.prog_fd("enforce_index_op"), op);
    }
    // This process's entry in the index (keyed by its mm), if any.
    std::optional<gms_idx_state> own_state()
    {
        for (const auto& o : gms::read_index_owners(tracer.map_fd("idx_state")))
            if (o.key > UINT32_MAX && o.state.tgid == uint32_t(getpid()))
                return o.state;
        return std::nullopt;
    }
    gms_veto_state veto_state()
    {
        gms_veto_state st{};
        uint32_t zero = 0;
        bpf_map_lookup_elem(tracer.map_fd("veto_state"), &zero, &st);
        return st;
    }
    std::vector<gms_veto_event> drain()
    {
        std::vector<gms_veto_event> out;
        tracer.consume([&](const gms::Event& e) {
            if (e.type() == GMS_EV_VETO)
                out.push_back(std::get<gms_veto_event>(e.rec));
        });
        return out;
    }
    gms::Features features;
    gms::Tracer tracer;
};

std::string why_no_lsm() { return gms::test::why_no_lsm_after(gms::test::why_no_vfio()); }

// A buffer that is both slot 1 of a VM and mapped for DMA through VFIO.
struct DmaVm {
    static constexpr uint64_t kPages = 16, kIova = 1 << 20, kGpa = 0x40000000;
    DmaVm()
    {
        void* p = mmap(nullptr, kPages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                       -1, 0);
        REQUIRE(p != MAP_FAILED);
        buffer = static_cast<std::byte*>(p);
        vm.emplace(gms::workload::Vm::UserMemory{buffer, kPages, kGpa});
        std::string detail;
        REQUIRE(vfio.open(~0ull, detail) == 0);
    }
    ~DmaVm()
    {
        vm.reset();
        munmap(buffer, kPages * 4096);
    }
    int convert(uint64_t gpa, uint64_t pages, bool to_private = true)
    {
        return vm->convert(ConvertKind::vm_attributes, gpa, pages * 4096, to_private).error;
    }
    std::byte* buffer = nullptr;
    std::optional<gms::workload::Vm> vm;
    gms::workload::VfioContainer vfio;
};

gms::test::Run gmemscope(std::vector<std::string> args)
{
    args.insert(args.begin(), gms::test::binary());
    return gms::test::run(args);
}

}  // namespace

TEST_CASE("enforce refuses where the BPF LSM cannot run, and --status reports nothing attached", "[enforce][live]")
{
    GMS_REQUIRE_ROOT();
    auto f = gms::Features::probe();
    GMS_SKIP_IF(f.loads(gms::ProgKind::lsm) && f.bpf_lsm_active()
                    ? "this kernel runs the BPF LSM (the VM lane tests enforcement)"
                    : "");
    auto r = gmemscope({"enforce", "-d", "1"});
    CHECK(r.exit_code == 4);
    CHECK_THAT(r.err, Catch::Contains("cannot veto conversions on this kernel, so nothing is enforced"));
    CHECK_THAT(r.err, Catch::Contains("--audit"));
    auto s = gmemscope({"--json", "enforce", "--status"});
    REQUIRE(s.exit_code == 0);
    CHECK(nlohmann::json::parse(s.out)["active"] == false);
    auto a = gmemscope({"enforce", "--audit", "-d", "1"});
    CHECK(a.exit_code == 0);
    CHECK_THAT(a.err, Catch::Contains("observing only, nothing is blocked"));
    CHECK(gmemscope({"--json", "enforce", "--status"}).out.find("\"active\":false") != std::string::npos);
}

TEST_CASE("enforce --audit on the portable tier: a conversion over a declared range is reported, in gfns and "
          "through the gmem bindings",
          "[enforce][live]")
{
    GMS_REQUIRE_LIVE();
    gms::workload::VmConfig cfg;
    cfg.slot_pages = 8;
    cfg.gmem_size_bytes = 8 * 4096;
    gms::workload::Vm vm(cfg);
    // The exact answers below are the host lane's: KVM without memory
    // attributes on a default VM answers ENOTTY. (7.3 in the VM lane
    // accepts some; there the LSM tests cover enforcement.)
    int probe = vm.convert(ConvertKind::vm_attributes, vm.base_gpa(), 4096, false).error;
    GMS_SKIP_IF(probe == ENOTTY ? "" : "this kernel's KVM answers KVM_SET_MEMORY_ATTRIBUTES on a default VM "
                                        "(the exact answers here are the host lane's ENOTTY)");
    Veto v(GMS_VETO_AUDIT_SYSCALL);
    const uint64_t base = vm.base_gfn();
    gms::declare_range(v.tracer.prog_fd("enforce_index_op"), uint32_t(getpid()), base + 2, base + 4, "test");

    auto over = vm.convert(ConvertKind::vm_attributes, vm.base_gpa(), 8 * 4096, true);
    vm.convert(ConvertKind::vm_attributes, vm.base_gpa() + 4 * 4096, 4 * 4096, true);   // beside it
    vm.convert(ConvertKind::vm_attributes, vm.base_gpa(), 8 * 4096, false);             // to shared
    vm.convert(ConvertKind::gmem_attributes2, 0, 8 * 4096, true);   // offsets, bound to those gfns
    vm.convert(ConvertKind::gmem_convert, 3 * 4096, 4096, true);
    auto vetoes = v.drain();
    CHECK(over.error == ENOTTY);   // audit: the kernel answered, nothing blocked

    REQUIRE(vetoes.size() == 3);
    for (const auto& e : vetoes) {
        CHECK(e.mode == GMS_VETO_AUDIT_SYSCALL);
        CHECK(e.err == 0);
        CHECK(e.pin.kind == GMS_PIN_DECLARED);
        CHECK(e.pin.tgid == uint32_t(getpid()));
        CHECK(std::string(e.pin.comm) == "test");
    }
    CHECK(vetoes[0].first == base);
    CHECK(vetoes[0].end == base + 8);
    CHECK(vetoes[0].hit_first_gfn == base + 2);
    CHECK(vetoes[0].hit_end_gfn == base + 4);
    // The gmem-fd ones found the gfns by walking the VM's memslots in the kernel.
    CHECK(vetoes[1].gmem_ino == vm.gmem_ino());
    CHECK(vetoes[1].cmd == GMS_KVM_SET_MEMORY_ATTRIBUTES2);
    CHECK(vetoes[1].hit_first_gfn == base + 2);
    CHECK(vetoes[1].hit_end_gfn == base + 4);
    CHECK(vetoes[2].cmd == GMS_KVM_GMEM_CONVERT_PRIVATE);
    CHECK(vetoes[2].hit_first_gfn == base + 3);
    CHECK(vetoes[2].hit_end_gfn == base + 4);
}

TEST_CASE("enforce: a conversion over a VFIO-mapped memslot is vetoed, a range beside it passes to KVM, and "
          "so does the same one after the unmap",
          "[enforce][vfio]")
{
    GMS_SKIP_IF(why_no_lsm());
    DmaVm d;
    {
        Veto v(GMS_VETO_ENFORCE, EBUSY);
        REQUIRE(d.vfio.map(d.buffer, DmaVm::kIova, DmaVm::kPages * 4096) == 0);
        CHECK(d.convert(DmaVm::kGpa + 4 * 4096, 4) == EBUSY);
        CHECK(d.convert(0x10000, 1) == EINVAL);          // slot 0: no pin, KVM's own answer
        CHECK(d.convert(DmaVm::kGpa, 4, false) == 0);   // to shared is not vetoed, and 6.12 accepts it
        auto vetoes = v.drain();
        REQUIRE(vetoes.size() == 1);
        const auto& e = vetoes[0];
        CHECK(e.mode == GMS_VETO_ENFORCE);
        CHECK(e.err == EBUSY);
        CHECK(e.first == 0x40004);
        CHECK(e.end == 0x40008);
        CHECK(e.hit_first_gfn == 0x40004);
        CHECK(e.hit_end_gfn == 0x40008);
        CHECK(e.pin.kind == GMS_PIN_VFIO);
        CHECK(e.pin.tgid == uint32_t(getpid()));
        CHECK(e.pin.fd == uint32_t(d.vfio.fd()));
        CHECK(e.pin.iova == DmaVm::kIova);
        CHECK(e.pin.vaddr == reinterpret_cast<uint64_t>(d.buffer));
        CHECK(e.pin.end == reinterpret_cast<uint64_t>(d.buffer) + DmaVm::kPages * 4096);

        // A declared range is vetoed the same way.
        gms::declare_range(v.tracer.prog_fd("enforce_index_op"), uint32_t(getpid()), 0x10, 0x20, "declared");
        CHECK(d.convert(0x18000, 1) == EBUSY);
        auto declared = v.drain();
        REQUIRE(declared.size() == 1);
        CHECK(declared[0].pin.kind == GMS_PIN_DECLARED);
        CHECK(declared[0].hit_first_gfn == 0x18);

        REQUIRE(d.vfio.unmap(DmaVm::kIova, DmaVm::kPages * 4096) == 0);
        CHECK(d.convert(DmaVm::kGpa + 4 * 4096, 4) == EINVAL);
        CHECK(v.drain().empty());
        REQUIRE(d.vfio.map(d.buffer, DmaVm::kIova, DmaVm::kPages * 4096) == 0);
        CHECK(d.convert(DmaVm::kGpa, 1) == EBUSY);
    }
    // Fail-open: the veto ends with the process (here, the Tracer) that set it up.
    CHECK(d.convert(DmaVm::kGpa, 1) == EINVAL);
}

TEST_CASE("enforce --audit with the BPF LSM: both conversions pass, the overlapping one is logged", "[enforce][vfio]")
{
    GMS_SKIP_IF(why_no_lsm());
    DmaVm d;
    Veto v(GMS_VETO_AUDIT);
    REQUIRE(d.vfio.map(d.buffer, DmaVm::kIova, DmaVm::kPages * 4096) == 0);
    CHECK(d.convert(DmaVm::kGpa, DmaVm::kPages) == EINVAL);
    CHECK(d.convert(0x10000, 1) == EINVAL);
    auto vetoes = v.drain();
    REQUIRE(vetoes.size() == 1);
    CHECK(vetoes[0].mode == GMS_VETO_AUDIT);
    CHECK(vetoes[0].err == 0);
    CHECK(vetoes[0].hit_first_gfn == 0x40000);
    CHECK(vetoes[0].hit_end_gfn == 0x40010);
}

TEST_CASE("enforce --persist: SIGKILL of the loader leaves the veto in force, --stop removes it, --status tells "
          "only what is attached",
          "[enforce][vfio]")
{
    GMS_SKIP_IF(why_no_lsm());
    auto status = [] { return nlohmann::json::parse(gmemscope({"--json", "enforce", "--status"}).out); };
    REQUIRE(status()["active"] == false);

    // Whatever fails below, the loader is killed and its enforcement removed.
    gms::test::StopPersistedAtExit stop_at_exit;
    gms::test::Background loader({gms::test::binary(), "enforce", "--persist"});
    // Up once the link is pinned, which the loader does after attaching:
    // a look at bpffs per poll, not a `enforce --status` process.
    const std::string link = std::string(gms::kEnforceDir) + "/link_lsm_file_ioctl";
    bool up = gms::test::wait_until([&] { return access(link.c_str(), F_OK) == 0; }, std::chrono::seconds(120));
    INFO("loader's stderr: " << loader.err());
    REQUIRE(up);
    REQUIRE(status()["active"] == true);
    DmaVm d;   // mapped after enforcement started: the persisted ioctl program indexes it
    REQUIRE(d.vfio.map(d.buffer, DmaVm::kIova, DmaVm::kPages * 4096) == 0);
    loader.stop(SIGKILL);

    auto s = status();
    CHECK(s["active"] == true);
    CHECK(s["loader_running"] == false);
    CHECK(s["persist"] == true);
    CHECK(s["errno"] == "EBUSY");
    CHECK(d.convert(DmaVm::kGpa, 2) == EBUSY);

    auto stop = gmemscope({"enforce", "--stop"});
    CHECK(stop.exit_code == 0);
    CHECK(status()["active"] == false);
    CHECK(d.convert(DmaVm::kGpa, 2) == EINVAL);
}

TEST_CASE("a declared range is refused when empty or inverted, before the index is asked", "[enforce]")
{
    // No program behind fd -1: the range is checked first.
    CHECK_THROWS_AS(gms::declare_range(-1, 42, 0x200, 0x200, "empty"), std::invalid_argument);
    CHECK_THROWS_AS(gms::declare_range(-1, 42, 0x300, 0x200, "inverted"), std::invalid_argument);
}

namespace {

using gms::test::Buffer;

// A VM whose memory is `buf` from gpa `gpa` in `slots` equal memslots (slot 1 and up).
gms::workload::Vm vm_over(const Buffer& buf, uint64_t gpa, uint64_t slots)
{
    uint64_t per_slot = buf.pages / slots;
    gms::workload::Vm vm(gms::workload::Vm::UserMemory{buf.base, per_slot, gpa});
    for (uint64_t i = 1; i < slots; i++) {
        kvm_userspace_memory_region r{};
        r.slot = uint32_t(1 + i);
        r.guest_phys_addr = gpa + i * per_slot * 4096;
        r.memory_size = per_slot * 4096;
        r.userspace_addr = reinterpret_cast<uint64_t>(buf.page(i * per_slot));
        REQUIRE(ioctl(vm.vm_fd(), KVM_SET_USER_MEMORY_REGION, &r) == 0);
    }
    return vm;
}

int convert_page(gms::workload::Vm& vm, uint64_t gpa, uint64_t pages = 1)
{
    return vm.convert(ConvertKind::vm_attributes, gpa, pages * 4096, true).error;
}

}  // namespace

TEST_CASE("enforce's index answers like a brute-force overlap check: 3,000 random mappings, 2,000 random "
          "conversions, before and after unmapping half",
          "[enforce][live]")
{
    GMS_REQUIRE_LIVE();
    constexpr uint64_t kGpa = 0x100000000ull;
    Buffer buf(1 << 16);
    Veto v(GMS_VETO_AUDIT_SYSCALL);
    auto vm = vm_over(buf, kGpa, 1);
    struct Mapping {
        uint64_t first, end, iova;
        bool live;
    };
    std::mt19937_64 rng(17);
    std::vector<Mapping> maps;
    for (uint64_t i = 0; i < 3000; i++) {
        uint64_t len = rng() % 8 == 0 ? 1 + rng() % 4096 : 1 + rng() % 64;
        uint64_t first = rng() % (buf.pages - len);
        maps.push_back({first, first + len, (i + 1) << 25, true});
        REQUIRE(v.map(buf.page(first), len * 4096, maps.back().iova) == 0);
    }
    REQUIRE(v.own_state()->mappings == 3000);
    auto check = [&] {
        uint64_t hits = 0;
        for (int q = 0; q < 1000; q++) {
            uint64_t len = rng() % 4 == 0 ? 1 + rng() % 2048 : 1 + rng() % 16;
            uint64_t a = rng() % (buf.pages - len), b = a + len;
            bool expected = false;
            for (const auto& m : maps)
                expected |= m.live && m.first < b && m.end > a;
            convert_page(vm, kGpa + a * 4096, len);
            auto vetoes = v.drain();
            INFO("conversion of pages [" << a << ", " << b << ")");
            REQUIRE(vetoes.size() == (expected ? 1u : 0u));
            if (!expected)
                continue;
            hits++;
            const auto& e = vetoes[0];
            CHECK(e.why == GMS_VETO_OVERLAP);
            REQUIRE(e.pin.kind == GMS_PIN_VFIO);
            uint64_t first = (e.pin.vaddr - reinterpret_cast<uint64_t>(buf.base)) / 4096;
            uint64_t end = (e.pin.end - reinterpret_cast<uint64_t>(buf.base)) / 4096;
            // the mapping it names is live and over the range, and the gfns it gives are its part of the range
            bool named = false;
            for (const auto& m : maps)
                named |= m.live && m.first == first && m.end == end && m.iova == e.pin.iova;
            CHECK(named);
            CHECK(first < b);
            CHECK(end > a);
            CHECK(e.hit_first_gfn == kGpa / 4096 + std::max(a, first));
            CHECK(e.hit_end_gfn == kGpa / 4096 + std::min(b, end));
        }
        return hits;
    };
    CHECK(check() > 100);
    for (size_t i = 0; i < maps.size(); i += 2) {
        REQUIRE(v.unmap(maps[i].iova, (maps[i].end - maps[i].first) * 4096) == 1);
        maps[i].live = false;
    }
    REQUIRE(v.own_state()->mappings == 1500);
    CHECK(check() > 100);
}

TEST_CASE("enforce's index at scale on the portable tier: 65,536 mappings and 4,096 memslots, every mapped page "
          "reported and every page beside it not, then half unmapped",
          "[enforce][live]")
{
    GMS_REQUIRE_LIVE();
    constexpr uint64_t kGpa = 0x100000000ull, kMappings = 65536, kIova = 1ull << 32;
    Buffer buf(2 * kMappings);
    Veto v(GMS_VETO_AUDIT_SYSCALL);
    auto vm = vm_over(buf, kGpa, 4096);
    for (uint64_t j = 0; j < kMappings; j++)
        REQUIRE(v.map(buf.page(2 * j), 4096, kIova + 2 * j * 4096) == 0);
    REQUIRE(v.own_state()->mappings == kMappings);
    auto check = [&](bool half_unmapped) {
        for (uint64_t batch = 0; batch < kMappings; batch += 4096) {
            std::vector<uint64_t> expected;
            for (uint64_t j = batch; j < batch + 4096; j++) {
                convert_page(vm, kGpa + 2 * j * 4096);       // the mapped page
                convert_page(vm, kGpa + (2 * j + 1) * 4096); // the page beside it
                if (!half_unmapped || j % 2)
                    expected.push_back(j);
            }
            auto vetoes = v.drain();
            REQUIRE(vetoes.size() == expected.size());
            for (size_t k = 0; k < vetoes.size(); k++) {
                INFO("mapping " << expected[k]);
                REQUIRE(vetoes[k].pin.vaddr == reinterpret_cast<uint64_t>(buf.page(2 * expected[k])));
                REQUIRE(vetoes[k].pin.iova == kIova + 2 * expected[k] * 4096);
                REQUIRE(vetoes[k].hit_first_gfn == kGpa / 4096 + 2 * expected[k]);
                REQUIRE(vetoes[k].hit_end_gfn == kGpa / 4096 + 2 * expected[k] + 1);
            }
        }
    };
    check(false);
    for (uint64_t j = 0; j < kMappings; j += 2)
        REQUIRE(v.unmap(kIova + 2 * j * 4096, 4096) == 1);
    REQUIRE(v.own_state()->mappings == kMappings / 2);
    check(true);
}

TEST_CASE("enforce's index past its limit: fails closed for that process, counts what is not indexed, lifts "
          "when those are unmapped, --fail-open lets them pass and counts the passes",
          "[enforce][live]")
{
    GMS_REQUIRE_LIVE();
    constexpr uint64_t kGpa = 0x100000000ull, kIova = 1ull << 32;
    Buffer buf(64);
    auto vm = vm_over(buf, kGpa, 4);
    auto map_all = [&](Veto& v) {
        for (uint64_t j = 0; j < 12; j++)
            CHECK(v.map(buf.page(2 * j), 4096, kIova + 2 * j * 4096) == (j < 8 ? 0 : -ENOSPC));
        auto st = v.own_state();
        REQUIRE(st);
        CHECK(st->mappings == 8);
        CHECK(st->not_indexed == 4);
        CHECK(st->unindexed_bytes == 4 * 4096);
    };
    {
        Veto v(GMS_VETO_AUDIT_SYSCALL, EBUSY, 8);
        map_all(v);
        convert_page(vm, kGpa + 1 * 4096);   // beside every mapping
        convert_page(vm, kGpa + 0 * 4096);   // over an indexed one
        auto vetoes = v.drain();
        REQUIRE(vetoes.size() == 2);
        for (const auto& e : vetoes) {
            CHECK(e.why == GMS_VETO_UNINDEXED);
            CHECK(e.not_indexed == 4);
            CHECK(e.pin.kind == 0);
        }
        CHECK(gms::to_line(gms::Event{vetoes[0]}, 0).find("4 DMA mappings the index could not hold") !=
              std::string::npos);
        // The kernel unmaps them (VFIO writes back the bytes it unmapped): nothing of them is mapped any more.
        for (uint64_t j = 8; j < 12; j++)
            CHECK(v.unmap(kIova + 2 * j * 4096, 4096) == 0);
        CHECK(v.own_state()->unindexed_bytes == 0);
        convert_page(vm, kGpa + 1 * 4096);
        convert_page(vm, kGpa + 0 * 4096);
        vetoes = v.drain();
        REQUIRE(vetoes.size() == 1);
        CHECK(vetoes[0].why == GMS_VETO_OVERLAP);
        CHECK(vetoes[0].hit_first_gfn == kGpa / 4096);
    }
    {
        Veto v(GMS_VETO_AUDIT_SYSCALL, EBUSY, 8, true);
        CHECK(v.veto_state().fail_open == 1);
        map_all(v);
        convert_page(vm, kGpa + 1 * 4096);    // beside: passes
        convert_page(vm, kGpa + 22 * 4096);   // over a mapping not indexed: passes, as fail-open says
        convert_page(vm, kGpa + 2 * 4096);    // over an indexed one: reported
        auto vetoes = v.drain();
        REQUIRE(vetoes.size() == 1);
        CHECK(vetoes[0].why == GMS_VETO_OVERLAP);
        CHECK(vetoes[0].hit_first_gfn == kGpa / 4096 + 2);
        CHECK(v.veto_state().passed_unindexed == 3);
    }
}

TEST_CASE("enforce at VMM scale: 10,000 VFIO type1 mappings over one buffer and 1,000 memslots, a conversion over "
          "any mapped page is vetoed, one beside it passes to KVM, and after unmapping half the answers follow",
          "[enforce][vfio]")
{
    GMS_SKIP_IF(why_no_lsm());
    constexpr uint64_t kGpa = 0x40000000, kMappings = 10000, kIova = 1 << 20;
    Buffer buf(2 * kMappings);
    std::memset(buf.base, 0, buf.pages * 4096);   // type1 pins what is there
    auto vm = vm_over(buf, kGpa, 1000);
    gms::workload::VfioContainer vfio;
    std::string detail;
    REQUIRE(vfio.open(~0ull, detail) == 0);

    // The map/unmap ioctls untraced, then under enforcement (same run, TCG: only the ratio means anything).
    auto map_all = [&] {
        auto t0 = std::chrono::steady_clock::now();
        for (uint64_t j = 0; j < kMappings; j++)
            REQUIRE(vfio.map(buf.page(2 * j), kIova + 2 * j * 4096, 4096) == 0);
        return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kMappings;
    };
    auto unmap_all = [&](uint64_t step) {
        auto t0 = std::chrono::steady_clock::now();
        for (uint64_t j = 0; j < kMappings; j += step)
            REQUIRE(vfio.unmap(kIova + 2 * j * 4096, 4096) == 0);
        return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
               double(kMappings / step);
    };
    double map_untraced = map_all(), unmap_untraced = unmap_all(1);

    Veto v(GMS_VETO_ENFORCE, EBUSY);
    double map_traced = map_all();
    REQUIRE(v.own_state()->mappings == kMappings);
    // Every 7th mapping (1,429 of them), and the first and last.
    auto check = [&](bool half_unmapped) {
        for (uint64_t j = 0; j < kMappings; j += (j + 7 < kMappings ? 7 : kMappings - 1 - j ? kMappings - 1 - j : 1)) {
            INFO("mapping " << j);
            bool mapped = !half_unmapped || j % 2;
            REQUIRE(convert_page(vm, kGpa + 2 * j * 4096) == (mapped ? EBUSY : EINVAL));
            REQUIRE(convert_page(vm, kGpa + (2 * j + 1) * 4096) == EINVAL);
        }
    };
    check(false);
    auto vetoes = v.drain();
    REQUIRE(vetoes.size() > 1400);
    CHECK(vetoes[1].pin.kind == GMS_PIN_VFIO);
    CHECK(vetoes[1].pin.fd == uint32_t(vfio.fd()));
    CHECK(vetoes[1].pin.vaddr == reinterpret_cast<uint64_t>(buf.page(14)));
    CHECK(vetoes[1].pin.iova == kIova + 14 * 4096);
    CHECK(vetoes[1].hit_first_gfn == kGpa / 4096 + 14);
    double unmap_traced = unmap_all(2);   // the even ones
    CHECK(v.own_state()->mappings == kMappings / 2);
    check(true);
    std::printf("MEASURED VFIO_IOMMU_MAP_DMA of one page: %.1f us untraced, %.1f us with enforcement's index "
                "(ratio %.2f); UNMAP_DMA %.1f us untraced, %.1f us with it (ratio %.2f); %llu mappings, 1000 "
                "memslots, TCG\n",
                map_untraced, map_traced, map_traced / map_untraced, unmap_untraced, unmap_traced,
                unmap_traced / unmap_untraced, (unsigned long long)kMappings);
    for (uint64_t j = 1; j < kMappings; j += 2)
        REQUIRE(vfio.unmap(kIova + 2 * j * 4096, 4096) == 0);
    CHECK(v.own_state()->mappings == 0);
}

TEST_CASE("enforce past the index's limit with VFIO: conversions of the process's VMs are vetoed (fail closed) "
          "and --status counts what is not indexed, with --fail-open they pass and --status says so",
          "[enforce][vfio]")
{
    GMS_SKIP_IF(why_no_lsm());
    constexpr uint64_t kGpa = 0x40000000, kIova = 1 << 20;
    Buffer buf(64);
    std::memset(buf.base, 0, buf.pages * 4096);
    auto vm = vm_over(buf, kGpa, 4);
    gms::workload::VfioContainer vfio;
    std::string detail;
    REQUIRE(vfio.open(~0ull, detail) == 0);
    auto status = [] { return nlohmann::json::parse(gmemscope({"--json", "enforce", "--status"}).out); };
    for (bool fail_open : {false, true}) {
        INFO("fail_open " << fail_open);
        Veto v(GMS_VETO_ENFORCE, EBUSY, 8, fail_open);
        for (uint64_t j = 0; j < 12; j++)
            REQUIRE(vfio.map(buf.page(2 * j), kIova + 2 * j * 4096, 4096) == 0);   // the kernel maps all 12
        auto s = status();
        CHECK(s["active"] == true);
        CHECK(s["fail_open"] == fail_open);
        CHECK(s["max_mappings_per_process"] == 8);
        CHECK(s["indexed_mappings"] == 8);
        CHECK(s["not_indexed"] == 4);
        CHECK(s["unindexed_bytes"] == 4 * 4096);
        REQUIRE(s["not_indexed_processes"].size() == 1);
        CHECK(s["not_indexed_processes"][0]["pid"] == getpid());
        auto text = gmemscope({"enforce", "--status"}).out;
        CHECK_THAT(text, Catch::Contains("4 mappings NOT indexed"));
        CHECK_THAT(text, Catch::Contains(fail_open ? "fail-open, so conversions over them pass"
                                                   : "conversions to private of those processes' VMs are refused"));
        // beside every mapping, over one not indexed, over an indexed one
        CHECK(convert_page(vm, kGpa + 1 * 4096) == (fail_open ? EINVAL : EBUSY));
        CHECK(convert_page(vm, kGpa + 22 * 4096) == (fail_open ? EINVAL : EBUSY));
        CHECK(convert_page(vm, kGpa + 2 * 4096) == EBUSY);
        auto vetoes = v.drain();
        REQUIRE(vetoes.size() == (fail_open ? 1u : 3u));
        CHECK(vetoes[0].why == (fail_open ? GMS_VETO_OVERLAP : GMS_VETO_UNINDEXED));
        if (fail_open)
            CHECK(status()["passed_unindexed"] == 3);
        for (uint64_t j = 0; j < 12; j++)
            REQUIRE(vfio.unmap(kIova + 2 * j * 4096, 4096) == 0);
        // All unmapped: what the index could not hold is gone, and so is the fail-closed veto.
        CHECK(convert_page(vm, kGpa + 1 * 4096) == EINVAL);
        s = status();
        CHECK(s["indexed_mappings"] == 0);
        CHECK(s["unindexed_bytes"] == 0);
    }
}
