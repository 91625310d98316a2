// The hook catalog against itself and against the BPF object.
#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"

#include "loader/probe/catalog.hpp"
#include "loader/events/events.hpp"
#include "loader/capture/tracer.hpp"

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
        // task_fork is the process filter, lsm_file_ioctl and enforce_index_op
        // (the index's entry point, a syscall program) enforcement: not hooks.
        CHECK((named.contains(p) || p == "task_fork" || p == "lsm_file_ioctl" || p == "enforce_index_op" ||
               p == "enforce_process_exit"));
    }
}

TEST_CASE("a program that serves one hook is named after it", "[catalog]")
{
    std::map<std::string_view, std::set<std::string_view>> hooks_of;
    for (const auto& h : gms::catalog())
        for (const auto& m : h.mechanisms)
            for (auto p : m.programs)
                hooks_of[p].insert(h.name);
    for (const auto& h : gms::catalog())
        for (const auto& m : h.mechanisms) {
            // The syscall tier's programs are named after the syscall they
            // decode; a program that serves several hooks, after its target.
            if (m.kind == gms::Mech::syscall)
                continue;
            std::string stem(h.name);
            std::replace(stem.begin(), stem.end(), '.', '_');
            for (auto p : m.programs) {
                INFO(h.name << ": program " << p);
                if (hooks_of[p].size() > 1)
                    continue;
                bool precise = m.kind == gms::Mech::fentry || m.kind == gms::Mech::fexit;
                // a function of another signature, or the hook's function in
                // another release's signature: the hook's name and what it reads
                if (precise && (!m.target.empty() || (m.arg >= 0 && p != stem)))
                    CHECK(std::string_view(p).starts_with(stem + "_"));
                else if (precise && m.programs.size() == 1)
                    CHECK(p == stem);
                else if (precise)
                    CHECK((p == stem + "_entry" || p == stem + "_exit"));
                else   // a fallback: the hook's name and what it attaches to
                    CHECK((p == stem || std::string_view(p).starts_with(stem + "_")));
            }
        }
}

TEST_CASE("each call record id belongs to one hook, and names it", "[catalog]")
{
    std::set<uint16_t> fns;
    for (const auto& h : gms::catalog()) {
        if (!h.fn)
            continue;
        INFO(h.name);
        CHECK(fns.insert(h.fn).second);
        CHECK(h.fn < GMS_FN_MAX);
        CHECK(gms::fn_name(h.fn) == h.name);
        CHECK(gms::hook_of_fn(h.fn) == &h);
    }
    // Every id the BPF side can send has its row.
    for (uint16_t fn = 1; fn < GMS_FN_MAX; fn++) {
        INFO("gms_fn " << fn);
        CHECK(fns.contains(fn));
    }
}

TEST_CASE("the self-test can tell every hook from the records it sends", "[catalog]")
{
    for (const auto& h : gms::catalog()) {
        INFO(h.name);
        // A call id, or records of the portable tier: else nothing could
        // ever show it fired.
        CHECK((h.fn != 0 || !h.seen.empty()));
        // A trigger step per tier that the hook has a mechanism for.
        bool has_precise = false, has_portable = false;
        for (const auto& m : h.mechanisms)
            (m.kind == gms::Mech::fentry || m.kind == gms::Mech::fexit ? has_precise : has_portable) = true;
        if (!has_precise)
            CHECK(h.trigger.precise.empty());
        if (!has_portable)
            CHECK(h.trigger.portable.empty());
    }
}

TEST_CASE("the hooks schema names exactly the catalog's hooks", "[catalog]")
{
    std::ifstream in(gms::test::source_dir() + "/schemas/hooks.schema.json");
    REQUIRE(in);
    auto schema = nlohmann::json::parse(in);
    std::set<std::string> in_schema, in_catalog;
    for (const auto& name : schema["$defs"]["hook_name"]["enum"])
        in_schema.insert(name.get<std::string>());
    for (const auto& h : gms::catalog())
        in_catalog.emplace(h.name);
    CHECK(in_schema == in_catalog);
}
