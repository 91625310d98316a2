// The stack symbolizer, directly: kernel addresses through /proc/kallsyms,
// user addresses of a live process through its maps and ELF symbols.
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include <catch2/catch.hpp>

#include "helpers.hpp"
#include "loader/report/symbols.hpp"

// A function of this binary with a symbol of its own (not inlined, not static).
extern "C" __attribute__((noinline, used)) int gms_test_symbol_target(int x) { return x * 3 + 1; }

TEST_CASE("kernel addresses are named function+offset, unknown ones stay hex", "[symbols]")
{
    GMS_SKIP_IF(gms::test::why_no_root());   // kallsyms shows addresses to root only
    gms::KernelSymbols ks;
    // A symbol with an address, the next one more than 4 bytes on.
    auto sym = std::adjacent_find(ks.text().begin(), ks.text().end(),
                                  [](const auto& a, const auto& b) { return a.first != 0 && b.first - a.first > 4; });
    REQUIRE(sym != ks.text().end());
    const uint64_t addr = sym->first;
    // Another symbol may share the address (aliases): the offset is what must hold.
    CHECK_THAT(ks.name(addr), Catch::EndsWith("+0x0"));
    CHECK_THAT(ks.name(addr + 4), Catch::EndsWith("+0x4"));
    CHECK(ks.name(0) == "0x0");
    CHECK(ks.name(1) == "0x1");   // below every symbol
}

// Whether this binary kept its symbol table (the VM lane strips unit_tests
// for its initramfs).
static bool has_symtab()
{
    elf_version(EV_CURRENT);
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    Elf* elf = fd >= 0 ? elf_begin(fd, ELF_C_READ, nullptr) : nullptr;
    bool found = false;
    for (Elf_Scn* scn = elf ? elf_nextscn(elf, nullptr) : nullptr; scn && !found; scn = elf_nextscn(elf, scn)) {
        GElf_Shdr sh;
        found = gelf_getshdr(scn, &sh) && sh.sh_type == SHT_SYMTAB;
    }
    if (elf)
        elf_end(elf);
    if (fd >= 0)
        close(fd);
    return found;
}

TEST_CASE("user addresses of a live process are named from its ELF symbols", "[symbols]")
{
    GMS_SKIP_IF(has_symtab() ? "" : "this unit_tests binary is stripped (the VM lane strips it): no symbols to name");
    gms::UserSymbols us;
    auto ip = reinterpret_cast<uint64_t>(&gms_test_symbol_target);
    CHECK(gms_test_symbol_target(1) == 4);
    std::string name = us.name(getpid(), ip + 2);
    CHECK_THAT(name, Catch::StartsWith("gms_test_symbol_target+0x2"));
    CHECK_THAT(name, Catch::Contains("unit_tests"));
    // Not in any executable mapping: the bare address.
    CHECK(us.name(getpid(), 0x10) == "0x10");
}
