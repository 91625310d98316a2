// The feature probe on the real kernel.  The exact answers are those of
// the project's host lane (KERNEL-NOTES section 1: a 6.18 PVM guest whose
// policy refuses fentry, fexit and LSM programs with EPERM).
#include <sys/utsname.h>

#include <cerrno>
#include <string>

#include <catch2/catch.hpp>

#include "helpers.hpp"
#include "loader/catalog.hpp"
#include "loader/features.hpp"
#include "loader/tracer.hpp"

namespace {

bool host_lane()
{
    struct utsname u {};
    uname(&u);
    return std::string(u.release).find("-fc-") != std::string::npos;
}

const gms::HookStatus& hook(const std::vector<gms::HookStatus>& hooks, std::string_view name)
{
    for (const auto& h : hooks)
        if (h.hook->name == name)
            return h;
    FAIL("no hook " << name);
    throw;
}

}  // namespace

TEST_CASE("the probe mounts what it needs and explains every refusal", "[features][live]")
{
    GMS_REQUIRE_ROOT();
    auto f = gms::Features::probe();
    CHECK_FALSE(f.tracefs().empty());
    CHECK(f.vmlinux_btf());
    for (auto k : {gms::ProgKind::tracepoint, gms::ProgKind::raw_tp, gms::ProgKind::tp_btf, gms::ProgKind::fentry,
                   gms::ProgKind::fexit, gms::ProgKind::lsm, gms::ProgKind::iter}) {
        const auto& p = f.load(k);
        INFO(gms::prog_kind_name(k) << ": " << p.detail);
        if (!p.ok) {
            CHECK(p.err != 0);
            CHECK_FALSE(p.detail.empty());
        }
    }
}

TEST_CASE("on the host lane: portable tier loads, precise tier and LSM are refused with EPERM",
          "[features][live]")
{
    GMS_REQUIRE_ROOT();
    GMS_SKIP_IF(host_lane() ? "" : "exact answers are those of the host lane kernel (6.18 PVM guest)");
    auto f = gms::Features::probe();
    CHECK(f.loads(gms::ProgKind::tracepoint));
    CHECK(f.loads(gms::ProgKind::tp_btf));
    CHECK(f.loads(gms::ProgKind::iter));
    for (auto k : {gms::ProgKind::fentry, gms::ProgKind::fexit, gms::ProgKind::lsm}) {
        INFO(gms::prog_kind_name(k));
        CHECK_FALSE(f.loads(k));
        CHECK(f.load(k).err == EPERM);
        CHECK_THAT(f.load(k).detail, Catch::Contains("EPERM"));
    }
    CHECK(f.bpf_lsm_active());  // listed, yet LSM programs are refused at load

    auto hooks = gms::resolve(f, gms::built_programs());
    for (auto name : {"vfio.pin", "vfio.unpin", "iommufd.map", "iommufd.unmap", "iommufd.pin"}) {
        INFO(name);
        for (const auto& [sym, where] : hook(hooks, name).symbols)
            CHECK(where.empty());  // VFIO and iommufd are not configured here
    }
    auto chosen = [&](std::string_view name) {
        const auto& h = hook(hooks, name);
        REQUIRE(h.chosen >= 0);
        return h.mechs[h.chosen].mech->kind;
    };
    CHECK(chosen("kvm_mmu.fault") == gms::Mech::tp_btf);
    CHECK(chosen("gmem.create") == gms::Mech::syscall);
    CHECK(chosen("gmem.bind") == gms::Mech::syscall);
    CHECK(chosen("gmem.punch_hole") == gms::Mech::syscall);
    CHECK(chosen("gmem.invalidate") == gms::Mech::tracepoint);
    CHECK(chosen("gmem.pagecache_add") == gms::Mech::tracepoint);
    CHECK(chosen("kvm_mmu.set_spte") == gms::Mech::tracepoint);
    CHECK(chosen("kvm_mmu.zap_all_fast") == gms::Mech::tp_btf);
    CHECK(chosen("kvm_mmu.prepare_zap_page") == gms::Mech::tracepoint);
    // Hooks with only a precise mechanism have none here, and say why.
    const auto& pin = hook(hooks, "iommufd.pin");
    CHECK(pin.chosen < 0);
    CHECK_THAT(pin.why_none, Catch::Contains("EPERM"));
}
