// Real conversions: the private scenario (loader/workload_private.cpp) in
// a KVM_X86_SW_PROTECTED_VM, on the VM lane's conversion kernel
// (tests/vm/build-kernel.sh). Elsewhere these tests skip and say why,
// except the one that checks the scenario's refusal on kernels without
// private memory.
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "loader/workload.h"

namespace {

using gms::workload::Result;

constexpr uint64_t kPages = 32, kPrivatePages = 8, kPunchPages = 2;

std::vector<std::string> settings(std::vector<std::string> extra = {})
{
    std::vector<std::string> s = {"pages=" + std::to_string(kPages), "private_pages=" + std::to_string(kPrivatePages),
                                  "punch_pages=" + std::to_string(kPunchPages)};
    s.insert(s.end(), extra.begin(), extra.end());
    return s;
}

Result run_private(std::vector<std::string> extra = {})
{
    return gms::workload::run(gms::workload::parse_scenario("private", settings(std::move(extra))));
}

}  // namespace

TEST_CASE("scenario private refuses a kernel without KVM_X86_SW_PROTECTED_VM and names what it needs",
          "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    int types = gms::test::kvm_vm_types();
    GMS_SKIP_IF(types > 0 && (types & 2) ? "this kernel has KVM_X86_SW_PROTECTED_VM; the [private] tests run here"
                                         : "");
    REQUIRE_THROWS_WITH(run_private(), Catch::Contains("KVM_X86_SW_PROTECTED_VM") &&
                                           Catch::Contains("CONFIG_KVM_SW_PROTECTED_VM=y") &&
                                           Catch::Contains("KVM_CAP_VM_TYPES"));
}

TEST_CASE("scenario private: conversions both ways, punches, rebind, DMA mappings and a memory failure all "
          "succeed",
          "[private][workload]")
{
    GMS_SKIP_IF(gms::test::why_no_private());
    Result r = run_private();
    std::vector<std::string> names;
    for (const auto& s : r.steps) {
        INFO(s.name << ": " << s.detail);
        CHECK(s.error == 0);
        names.push_back(s.name);
    }
    CHECK(names == std::vector<std::string>{
                       "vm_create", "gmem_bind", "touch_shared", "to_private", "gmem_fault", "gmem_punch",
                       "gmem_punch", "touch_after_punch", "to_shared", "gmem_unbind", "gmem_rebind",
                       "touch_rebound", "vfio_open", "vfio_map", "to_private_vfio_mapped", "to_shared_vfio_mapped",
                       "vfio_unmap", "to_private_after_vfio_unmap", "to_shared_after_vfio_unmap", "iommufd_open",
                       "iommufd_bind", "iommufd_ioas_alloc", "iommufd_attach", "iommufd_map",
                       "to_private_iommufd_mapped", "to_shared_iommufd_mapped", "iommufd_unmap",
                       "to_private_after_iommufd_unmap", "to_shared_after_iommufd_unmap", "iommufd_map_file",
                       "iommufd_unmap_file", "gmem_hwpoison", "gmem_close"});
    // Ten conversions over the private range, every one accepted by KVM.
    REQUIRE(r.conversions.size() == 10);
    for (const auto& c : r.conversions)
        CHECK(c.error == 0);
    CHECK(r.punches == kPunchPages);
    CHECK(r.rebinds == 1);
    CHECK(r.pages_touched == 3 * kPages + kPrivatePages);
}

TEST_CASE("hooks --selftest on a kernel with private memory and iommufd: the gmem, conversion and iommufd hooks "
          "fire",
          "[private][selftest]")
{
    GMS_SKIP_IF(gms::test::why_no_private());
    auto r = gms::test::run({gms::test::binary(), "--json", "hooks", "--selftest"});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    auto doc = nlohmann::json::parse(r.out);
    std::map<std::string, std::string> verdict;
    for (const auto& h : doc["selftest"])
        verdict[h["hook"]] = h["verdict"];
    for (auto h : {"gmem.create", "gmem.bind", "gmem.unbind", "gmem.get_pfn", "gmem.invalidate", "gmem.punch_hole",
                   "gmem.release", "gmem.error_folio", "kvm.set_mem_attributes", "kvm.mmu_notifier", "vfio.pin",
                   "vfio.unpin", "iommufd.map", "iommufd.map_file", "iommufd.unmap", "iommufd.pin"}) {
        INFO(h);
        CHECK(verdict[h] == "fired");
    }
}
