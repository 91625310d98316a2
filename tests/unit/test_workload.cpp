// Tests of the built-in workload against the running kernel: every VM here
// is a real KVM VM, and every check reads back what the kernel did.
#include "loader/kvm_uapi.h"
#include "loader/workload.h"

#include <catch2/catch.hpp>

#include "helpers.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace {

using namespace gms::workload;
using Catch::Matchers::Contains;


// Page-cache residency of gmem pages, read with mincore() on the host's
// MAP_SHARED mapping of the gmem fd: it reports the file's page cache,
// which is where kvm_gmem_get_pfn() allocates.
std::vector<bool> resident(const Vm& vm, std::uint64_t offset_bytes, std::uint64_t npages)
{
    std::vector<unsigned char> vec(npages);
    void* addr = vm.gmem_mapping().data() + offset_bytes;
    REQUIRE(::mincore(addr, npages * page_bytes, vec.data()) == 0);
    std::vector<bool> pages;
    for (auto v : vec)
        pages.push_back(v & 1);
    return pages;
}

std::vector<bool> pattern(std::uint64_t npages, std::uint64_t first, std::uint64_t count)
{
    std::vector<bool> pages(npages, false);
    for (std::uint64_t i = first; i < first + count; ++i)
        pages[i] = true;
    return pages;
}

std::uint8_t gmem_byte(const Vm& vm, std::uint64_t offset_bytes)
{
    return static_cast<std::uint8_t>(vm.gmem_mapping()[offset_bytes]);
}

std::string fd_link(int fd)
{
    char buf[256] = {};
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf) - 1);
    return n < 0 ? std::string() : std::string(buf, static_cast<std::size_t>(n));
}

std::string fdinfo_field(int fd, const std::string& key)
{
    std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(key + ":", 0) == 0)
            return line.substr(line.find_first_not_of(" \t", key.size() + 1));
    return {};
}

// The same conversion ioctl as Vm::convert(), issued here directly, so the
// test compares against the kernel and not against the code under test.
int raw_convert_errno(const Vm& vm, ConvertKind kind, std::uint64_t start,
                      std::uint64_t size_bytes, bool to_private)
{
    namespace u = gms::uapi;
    std::uint64_t attributes = to_private ? u::kvm_memory_attribute_private : 0;
    int ret = 0;
    if (kind == ConvertKind::vm_attributes) {
        u::kvm_memory_attributes args{start, size_bytes, attributes, 0};
        ret = ::ioctl(vm.vm_fd(), u::kvm_set_memory_attributes_ioctl, &args);
    } else if (kind == ConvertKind::gmem_attributes2) {
        u::kvm_memory_attributes2 args{};
        args.offset = start;
        args.size = size_bytes;
        args.attributes = attributes;
        ret = ::ioctl(vm.gmem_fd(), u::kvm_set_memory_attributes2_ioctl, &args);
    } else {
        u::kvm_gmem_convert args{};
        args.offset = start;
        args.size = size_bytes;
        ret = ::ioctl(vm.gmem_fd(),
                      to_private ? u::kvm_gmem_convert_private_ioctl
                                 : u::kvm_gmem_convert_shared_ioctl,
                      &args);
    }
    return ret < 0 ? errno : 0;
}

Scenario scenario(const std::string& name, std::vector<std::string> settings)
{
    return parse_scenario(name, settings);
}

}  // namespace

TEST_CASE("KVM advertises guest_memfd with MMAP and INIT_SHARED", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    Vm vm;
    INFO("KVM_CAP_MEMORY_ATTRIBUTES = "
         << vm.check_extension(gms::uapi::kvm_cap_memory_attributes));
    CHECK(vm.check_extension(gms::uapi::kvm_cap_user_memory2) == 1);
    CHECK(vm.check_extension(gms::uapi::kvm_cap_guest_memfd) == 1);
    int flags = vm.check_extension(gms::uapi::kvm_cap_guest_memfd_flags);
    CHECK((flags & gms::uapi::guest_memfd_flag_mmap) != 0);
    CHECK((flags & gms::uapi::guest_memfd_flag_init_shared) != 0);
}

TEST_CASE("Vm creates a VM, a vCPU and a gmem file the kernel names", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    VmConfig config;
    config.gmem_size_bytes = 4ull << 20;
    config.slot_pages = 256;
    config.gmem_offset_bytes = 1ull << 20;
    Vm vm(config);

    CHECK(fd_link(vm.vm_fd()) == "anon_inode:kvm-vm");
    CHECK(fd_link(vm.vcpu_fd()) == "anon_inode:kvm-vcpu:0");
    CHECK(fd_link(vm.gmem_fd()) == "anon_inode:[kvm-gmem]");

    struct stat st {};
    REQUIRE(::fstat(vm.gmem_fd(), &st) == 0);
    CHECK(vm.gmem_ino() == st.st_ino);
    CHECK(fdinfo_field(vm.gmem_fd(), "ino") == std::to_string(st.st_ino));
    CHECK(static_cast<std::uint64_t>(st.st_size) == config.gmem_size_bytes);

    CHECK(vm.slot_bound());
    CHECK(vm.base_gpa() == 0x40000000);
    CHECK(vm.base_gfn() == 0x40000);
    CHECK(vm.slot_pages() == 256);
    CHECK(vm.gmem_offset_bytes() == (1ull << 20));
    CHECK(vm.gmem_pgoff() == 256);
    CHECK(vm.gmem_mapping().size() == config.gmem_size_bytes);
}

TEST_CASE("touch faults exactly the pages the guest wrote into gmem", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    Vm vm;
    CHECK(resident(vm, 0, 16) == pattern(16, 0, 0));

    vm.touch(2, 5);

    CHECK(resident(vm, 0, 16) == pattern(16, 2, 5));
    for (std::uint64_t page = 2; page < 7; ++page)
        CHECK(gmem_byte(vm, page * page_bytes) == 1);
}

TEST_CASE("touch honours the gmem offset of the slot", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    VmConfig config;
    config.gmem_size_bytes = 4ull << 20;
    config.slot_pages = 64;
    config.gmem_offset_bytes = 2ull << 20;
    Vm vm(config);

    vm.touch(0, 3);

    // index = gfn - base_gfn + gmem_offset / 4096
    CHECK(resident(vm, 0, 16) == pattern(16, 0, 0));
    CHECK(resident(vm, config.gmem_offset_bytes, 16) == pattern(16, 0, 3));
}

TEST_CASE("punch frees faulted gmem pages and touch brings them back", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    Vm vm;
    vm.touch(0, 8);
    REQUIRE(resident(vm, 0, 8) == pattern(8, 0, 8));

    REQUIRE(vm.punch(2 * page_bytes, 2 * page_bytes) == 0);

    std::vector<bool> expected = pattern(8, 0, 8);
    expected[2] = expected[3] = false;
    CHECK(resident(vm, 0, 8) == expected);
    // A host read faults in a fresh page: the guest's byte is gone.
    CHECK(gmem_byte(vm, 2 * page_bytes) == 0);

    vm.touch(2, 2);
    CHECK(resident(vm, 0, 8) == pattern(8, 0, 8));
    CHECK(gmem_byte(vm, 3 * page_bytes) == 1);
}

TEST_CASE("punch returns the kernel's errno", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    Vm vm;
    // kvm_gmem_fallocate() rejects ranges that are not page aligned.
    CHECK(vm.punch(1, page_bytes) == -EINVAL);
    CHECK(vm.punch(0, 100) == -EINVAL);
    CHECK(vm.punch(0, page_bytes) == 0);
}

TEST_CASE("deleting the memslot keeps gmem pages, and the guest then exits to MMIO",
          "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    Vm vm;
    vm.touch(0, 4);

    vm.delete_slot();

    CHECK_FALSE(vm.slot_bound());
    // The page cache belongs to the gmem inode, not to the memslot.
    CHECK(resident(vm, 0, 4) == pattern(4, 0, 4));
    // No memslot at the gpa: KVM treats the write as MMIO.
    CHECK_THROWS_WITH(vm.touch(0, 1), Contains("KVM_EXIT_MMIO") && Contains("rip="));
    // Deleting a slot that is not there is the kernel's EINVAL.
    try {
        vm.delete_slot();
        FAIL("second delete_slot() did not throw");
    } catch (const std::system_error& e) {
        CHECK(e.code().value() == EINVAL);
        CHECK_THAT(e.what(), Contains("KVM_SET_USER_MEMORY_REGION2"));
    }
}

TEST_CASE("bind_slot rebinds the memslot at another gmem offset", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    VmConfig config;
    config.gmem_size_bytes = 4ull << 20;
    config.slot_pages = 16;
    Vm vm(config);
    vm.touch(0, 4);
    vm.delete_slot();

    vm.bind_slot(vm.base_gpa(), 16, 1ull << 20);
    vm.touch(0, 2);

    CHECK(vm.slot_bound());
    CHECK(vm.gmem_pgoff() == 256);
    CHECK(resident(vm, 0, 8) == pattern(8, 0, 4));
    CHECK(resident(vm, 1ull << 20, 8) == pattern(8, 0, 2));
    CHECK(gmem_byte(vm, 1ull << 20) == 1);
}

TEST_CASE("close_gmem deletes the slot and closes the gmem fd", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    Vm vm;
    vm.touch(0, 4);
    int old_fd = vm.gmem_fd();

    vm.close_gmem();

    CHECK_FALSE(vm.slot_bound());
    CHECK(vm.gmem_fd() == -1);
    CHECK(vm.gmem_mapping().empty());
    errno = 0;
    CHECK(::fcntl(old_fd, F_GETFD) == -1);
    CHECK(errno == EBADF);
    CHECK(vm.punch(0, page_bytes) == -EBADF);
}

TEST_CASE("set-up failures throw system_error naming the ioctl", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    SECTION("gmem of size 0")
    {
        VmConfig config;
        config.gmem_size_bytes = 0;
        try {
            Vm vm(config);
            FAIL("Vm with a 0-byte gmem did not throw");
        } catch (const std::system_error& e) {
            CHECK(e.code().value() == EINVAL);
            CHECK_THAT(e.what(), Contains("KVM_CREATE_GUEST_MEMFD"));
        }
    }
    SECTION("slot larger than the gmem file")
    {
        VmConfig config;
        config.gmem_size_bytes = 1ull << 20;
        config.slot_pages = 512;
        try {
            Vm vm(config);
            FAIL("Vm with a slot past the end of gmem did not throw");
        } catch (const std::system_error& e) {
            CHECK(e.code().value() == EINVAL);
            CHECK_THAT(e.what(), Contains("KVM_SET_USER_MEMORY_REGION2"));
        }
    }
}

TEST_CASE("convert reports the kernel's answer for each conversion kind", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    Vm vm;
    vm.touch(0, 4);
    const std::uint64_t size_bytes = 4 * page_bytes;
    bool vm_attributes_supported =
        vm.check_extension(gms::uapi::kvm_cap_memory_attributes) > 0;

    for (auto kind : {ConvertKind::vm_attributes, ConvertKind::gmem_attributes2,
                      ConvertKind::gmem_convert}) {
        std::uint64_t start =
            kind == ConvertKind::vm_attributes ? vm.base_gpa() : vm.gmem_offset_bytes();
        for (bool to_private : {true, false}) {
            ConvertAnswer answer = vm.convert(kind, start, size_bytes, to_private);
            INFO(to_string(kind) << (to_private ? " to private" : " to shared") << ": errno "
                                 << answer.error << " (" << std::strerror(answer.error) << ")");
            CHECK(answer.kind == kind);
            CHECK(answer.to_private == to_private);
            CHECK(answer.error == raw_convert_errno(vm, kind, start, size_bytes, to_private));
            CHECK(answer.error_offset.has_value() == (kind != ConvertKind::vm_attributes));
            if (kind == ConvertKind::vm_attributes && !vm_attributes_supported)
                CHECK(answer.error != 0);
        }
    }
}

TEST_CASE("a Vm moves with its fds", "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    Vm a;
    int vm_fd = a.vm_fd();
    Vm b(std::move(a));

    CHECK(a.vm_fd() == -1);
    CHECK(a.gmem_fd() == -1);
    CHECK(b.vm_fd() == vm_fd);
    b.touch(0, 1);
    CHECK(resident(b, 0, 1) == pattern(1, 0, 1));
}

TEST_CASE("scenario fault touches its pages", "[workload][kvm][scenario]")
{
    GMS_REQUIRE_LIVE();
    std::ostringstream log;
    Result r = run(scenario("fault", {"pages=16"}), &log);
    CHECK(r.kind == ScenarioKind::fault);
    CHECK(r.pages_touched == 16);
    CHECK(r.vcpu_runs == 1);
    CHECK(r.gmem_ino != 0);
    CHECK(r.elapsed_ns > 0);
    CHECK_THAT(log.str(), Contains("gfn 0x40000"));
}

TEST_CASE("scenario punch-storm punches faulted pages", "[workload][kvm][scenario]")
{
    GMS_REQUIRE_LIVE();
    SECTION("one thread, by count")
    {
        Result r = run(scenario("punch-storm", {"count=256", "range_pages=64"}));
        CHECK(r.punches == 256);
        CHECK(r.ops == 256);
        CHECK(r.pages_touched == 256);  // four rounds of 64
        CHECK(r.vcpu_runs == 4);
        CHECK(r.ops_per_s() > 0);
    }
    SECTION("ranges of several pages")
    {
        Result r = run(scenario("punch-storm", {"count=10", "range_pages=64", "punch_pages=16"}));
        CHECK(r.punches == 10);
        CHECK(r.vcpu_runs == 3);  // rounds start at punches 0, 4 and 8
    }
    SECTION("threads and VMs")
    {
        Result r = run(scenario("punch-storm", {"count=301", "threads=2", "vms=2"}));
        CHECK(r.punches == 301);
    }
    SECTION("by duration")
    {
        Result r = run(scenario("punch-storm", {"duration_ms=100"}));
        CHECK(r.elapsed_ns >= 100'000'000);
        CHECK(r.punches > 0);
    }
    SECTION("rate limited")
    {
        // 20 ops at 200/s: the last is due 95 ms after the first.
        Result r = run(scenario("punch-storm", {"count=20", "rate=200"}));
        CHECK(r.punches == 20);
        CHECK(r.elapsed_ns >= 95'000'000);
    }
}

TEST_CASE("scenario punch-empty never enters the guest", "[workload][kvm][scenario]")
{
    GMS_REQUIRE_LIVE();
    Result r = run(scenario("punch-empty", {"count=1000"}));
    CHECK(r.punches == 1000);
    CHECK(r.pages_touched == 0);
    CHECK(r.vcpu_runs == 0);
}

TEST_CASE("scenario rebind runs its sequence in order", "[workload][kvm][scenario]")
{
    GMS_REQUIRE_LIVE();
    std::ostringstream log;
    Result r = run(scenario("rebind", {"pages=8", "punch_pages=3", "rebind_offset=1M"}), &log);
    CHECK(r.punches == 3);
    CHECK(r.rebinds == 1);
    CHECK(r.pages_touched == 16);
    CHECK(r.vcpu_runs == 2);

    std::vector<std::string> steps;
    std::istringstream lines(log.str());
    for (std::string line; std::getline(lines, line);)
        steps.push_back(line.substr(0, line.find(' ', std::string("rebind: ").size())));
    CHECK(steps == std::vector<std::string>{
                       "rebind: bound", "rebind: touched", "rebind: punched", "rebind: punched",
                       "rebind: punched", "rebind: deleted", "rebind: rebound", "rebind: touched",
                       "rebind: closed"});
    CHECK_THAT(log.str(), Contains("pgoff 0x100"));
    CHECK_THAT(log.str(), Contains("closed gmem ino " + std::to_string(r.gmem_ino)));
}

TEST_CASE("scenario churn rebinds in a loop", "[workload][kvm][scenario]")
{
    GMS_REQUIRE_LIVE();
    Result r = run(scenario("churn", {"count=10", "vms=2", "pages=4"}));
    CHECK(r.rebinds == 10);
    CHECK(r.pages_touched == 40);
}

TEST_CASE("scenario convert tries every kind both ways", "[workload][kvm][scenario]")
{
    GMS_REQUIRE_LIVE();
    std::ostringstream log;
    Result r = run(scenario("convert", {"pages=4"}), &log);
    REQUIRE(r.conversions.size() == 6);
    CHECK(r.conversions[0].kind == ConvertKind::vm_attributes);
    CHECK(r.conversions[0].to_private);
    CHECK_FALSE(r.conversions[1].to_private);
    CHECK(r.conversions[2].kind == ConvertKind::gmem_attributes2);
    CHECK(r.conversions[4].kind == ConvertKind::gmem_convert);
    CHECK_THAT(log.str(), Contains("convert: gmem_convert to shared: "));
}

TEST_CASE("parse_scenario reads names, keys and values", "[workload]")
{
    Scenario s = scenario("punch-storm", {"range_pages=128", "punch_pages=0x10", "threads=2",
                                          "gmem_offset=2M", "gmem_size=0x1000000", "rate=5000"});
    CHECK(s.kind == ScenarioKind::punch_storm);
    CHECK(s.range_pages == 128);
    CHECK(s.punch_pages == 16);
    CHECK(s.threads == 2);
    CHECK(s.gmem_offset_bytes == (2ull << 20));
    CHECK(s.gmem_size_bytes == (16ull << 20));
    CHECK(s.rate == 5000);
    CHECK(to_string(s.kind) == "punch-storm");

    for (auto name : scenario_names())
        CHECK(to_string(scenario(std::string(name), {}).kind) == name);
}

TEST_CASE("parse_scenario names what it does not accept", "[workload]")
{
    CHECK_THROWS_WITH(scenario("storm", {}),
                      Contains("unknown scenario 'storm'") && Contains("punch-storm"));
    CHECK_THROWS_WITH(scenario("fault", {"page=3"}),
                      Contains("unknown key 'page'") && Contains("pages"));
    CHECK_THROWS_WITH(scenario("fault", {"pages=3x"}), Contains("bad value '3x' for pages"));
    CHECK_THROWS_WITH(scenario("fault", {"pages=1M"}), Contains("bad value '1M' for pages"));
    CHECK_THROWS_WITH(scenario("fault", {"pages"}), Contains("not key=value"));
    CHECK_THROWS_AS(scenario("fault", {"pages="}), std::invalid_argument);
}

TEST_CASE("parameters that do not fit together are rejected before any VM exists",
          "[workload]")
{
    CHECK_THROWS_WITH(scenario("punch-storm", {"range_pages=8", "punch_pages=9"}),
                      Contains("punch_pages"));
    CHECK_THROWS_WITH(scenario("fault", {"pages=0"}), Contains("pages"));
    CHECK_THROWS_WITH(scenario("rebind", {"rebind_offset=100"}), Contains("4096"));
    CHECK_THROWS_WITH(scenario("rebind", {"gmem_size=1M"}), Contains("gmem_size"));
    CHECK_THROWS_WITH(scenario("churn", {"threads=0"}), Contains("threads"));

    Scenario s;
    s.kind = ScenarioKind::punch_empty;
    s.range_pages = 4;
    s.punch_pages = 5;
    CHECK_THROWS_AS(run(s), std::invalid_argument);
}
