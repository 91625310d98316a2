// The feature probe on the real kernel.  The exact answers are those of
// the project's host lane (KERNEL-NOTES section 1: a 6.18 PVM guest whose
// policy refuses fentry, fexit and LSM programs with EPERM).
#include <sys/utsname.h>

#include <cerrno>
#include <string>

#include <catch2/catch.hpp>

#include "helpers.hpp"
#include "loader/probe/catalog.hpp"
#include "loader/probe/features.hpp"
#include "loader/capture/tracer.hpp"

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

TEST_CASE("a function's argument is told apart as pointer or not through the kernel's BTF", "[features][live]")
{
    GMS_REQUIRE_ROOT();
    auto f = gms::Features::probe();
    // vfs_read(struct file *, char __user *, size_t, loff_t *) on every release
    CHECK(f.btf_func_arg_is_pointer("vfs_read", 0) == true);
    CHECK(f.btf_func_arg_is_pointer("vfs_read", 1) == true);   // through the __user qualifier
    CHECK(f.btf_func_arg_is_pointer("vfs_read", 2) == false);  // through the size_t typedef
    CHECK_FALSE(f.btf_func_arg_is_pointer("vfs_read", 4).has_value());
    CHECK_FALSE(f.btf_func_arg_is_pointer("gmemscope_no_such_function", 0).has_value());
}

// libbpf's messages around a refused load, in the two shapes the
// verifier's log takes (written here, not captured from a kernel).
TEST_CASE("a refused program's reason is the verifier's error, before 7.3's diagnostics block and after", "[features]")
{
    auto log = [](std::string body) {
        return std::vector<std::string>{"libbpf: prog 'p': BPF program load failed: -EACCES",
                                        "libbpf: prog 'p': -- BEGIN PROG LOAD LOG --\n" + body +
                                            "-- END PROG LOAD LOG --"};
    };
    std::string insns = "0: R1=ctx() R10=fp0\n4: (79) r0 = *(u64 *)(r0 +8)\nR0 invalid mem access 'scalar'\n";
    CHECK(gms::refusal_reason(log(insns + "processed 5 insns (limit 1000000)\n"), "p", -EACCES) ==
          "verifier: R0 invalid mem access 'scalar' (EACCES)");
    CHECK(gms::refusal_reason(log(insns + "\nVerification failed: Register Type Safety: Invalid dereference\n\n"
                                          "Reason:\n  R0 is an integer scalar here, not a pointer to memory.\n\n"
                                          "Suggestion:\n  Preserve a pointer-valued register where needed, or "
                                          "reload\n  calls, or other operations that can invalidate it.\n\n"
                                          "processed 5 insns (limit 1000000)\n"),
                              "p", -EACCES) == "verifier: R0 invalid mem access 'scalar' (EACCES)");
    CHECK(gms::refusal_reason({"libbpf: prog 'p': relo #3: failed to resolve CO-RE relocation <byte_off> [7] "
                               "struct kvm_arch.n_used_mmu_pages"},
                              "p", -ESRCH)
              .starts_with("CO-RE relocation: failed to resolve CO-RE relocation"));
}
