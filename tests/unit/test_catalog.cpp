// The hook catalog against itself and against the BPF object.
#include <set>
#include <string>

#include <catch2/catch.hpp>

#include "loader/catalog.hpp"
#include "loader/tracer.hpp"

TEST_CASE("every hook has a mechanism, a unique name and says what it records", "[catalog]")
{
    std::set<std::string_view> names;
    for (const auto& h : gms::catalog()) {
        INFO(h.name);
        CHECK(names.insert(h.name).second);
        CHECK_FALSE(h.mechanisms.empty());
        CHECK_FALSE(h.records.empty());
        CHECK_FALSE(h.area.empty());
        for (const auto& m : h.mechanisms) {
            bool precise = m.kind == gms::Mech::fentry || m.kind == gms::Mech::fexit;
            // A precise mechanism names its function through the hook's symbols, or its own target.
            if (precise)
                CHECK_FALSE(h.symbols.empty());
            else
                CHECK_FALSE(m.target.empty());
            if (m.kind == gms::Mech::syscall)
                CHECK_FALSE(m.tracepoints.empty());
        }
    }
}

TEST_CASE("the catalog and the BPF object name the same programs", "[catalog]")
{
    auto built = gms::built_programs();
    std::set<std::string, std::less<>> named;
    for (const auto& h : gms::catalog())
        for (const auto& m : h.mechanisms)
            for (auto p : m.programs) {
                INFO(h.name << " names program " << p);
                CHECK(built.contains(p));
                named.emplace(p);
            }
    for (const auto& p : built) {
        INFO("program " << p << " is in the BPF object");
        // task_fork is the process filter, lsm_file_ioctl enforcement: not hooks.
        CHECK((named.contains(p) || p == "task_fork" || p == "lsm_file_ioctl"));
    }
}
