// Enforcement (`gmemscope enforce`, bpf/lsm.bpf.c, bpf/veto.bpf.h) on real
// kernels: on the host lane the BPF LSM is refused, so enforce refuses
// and --audit decides on sys_enter_ioctl against declared ranges; in the
// VM lane lsm/file_ioctl vetoes conversions over VFIO-mapped memslots.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "ioctls.h"
#include "loader/enforce.hpp"
#include "loader/tracer.hpp"
#include "loader/workload.h"

namespace {

using gms::workload::ConvertKind;

struct Veto {
    explicit Veto(uint32_t mode, int err = EBUSY)
        : features(gms::Features::probe()), tracer(features, options(mode, err))
    {
    }
    static gms::TraceOptions options(uint32_t mode, int err)
    {
        gms::TraceOptions o;
        o.veto_mode = mode;
        o.veto_errno = err;
        o.veto_only = true;
        o.wakeup_bytes = o.ringbuf_bytes;
        return o;
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

std::string why_no_lsm()
{
    std::string why = gms::test::why_no_vfio();
    if (!why.empty())
        return why;
    auto f = gms::Features::probe();
    if (!f.bpf_lsm_active() || !f.loads(gms::ProgKind::lsm))
        return "the BPF LSM cannot run here (" + f.load(gms::ProgKind::lsm).detail + ")";
    return "";
}

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
    Veto v(GMS_VETO_AUDIT_SYSCALL);
    gms::workload::VmConfig cfg;
    cfg.slot_pages = 8;
    cfg.gmem_size_bytes = 8 * 4096;
    gms::workload::Vm vm(cfg);
    const uint64_t base = vm.base_gfn();
    gms::declare_range(v.tracer.map_fd("declared"), uint32_t(getpid()), base + 2, base + 4, "test");

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
        gms::declare_range(v.tracer.map_fd("declared"), uint32_t(getpid()), 0x10, 0x20, "declared");
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

    pid_t loader = fork();
    if (loader == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execl(gms::test::binary().c_str(), "gmemscope", "enforce", "--persist", nullptr);
        _exit(127);
    }
    // Up once the link is pinned, which the loader does after attaching.
    bool up = false;
    for (int i = 0; i < 300 && !up; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        auto s = status();
        up = s["active"] == true &&
             std::find(s["pinned"].begin(), s["pinned"].end(), "link_lsm_file_ioctl") != s["pinned"].end();
    }
    REQUIRE(up);
    DmaVm d;   // mapped after enforcement started: the persisted ioctl program indexes it
    REQUIRE(d.vfio.map(d.buffer, DmaVm::kIova, DmaVm::kPages * 4096) == 0);
    kill(loader, SIGKILL);
    waitpid(loader, nullptr, 0);

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
