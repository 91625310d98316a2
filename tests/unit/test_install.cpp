// Packaging: `cmake --install` puts the binary, a man page per
// subcommand, bash completion, the daemon's unit and the schemas where
// a system looks for them, and they work from there.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"

namespace fs = std::filesystem;
using gms::test::binary;
using gms::test::run;

TEST_CASE("cmake --install installs a working binary, man pages, completion, the unit and the schemas", "[install]")
{
    gms::test::ScratchDir dir;
    std::string build = fs::path(binary()).parent_path();
    // The VM lane has the binaries, not the build tree.
    GMS_SKIP_IF(fs::exists(build + "/cmake_install.cmake") && run({"sh", "-c", "command -v cmake"}).exit_code == 0
                    ? ""
                    : "no build tree or no cmake here");
    auto r = run({"cmake", "--install", build, "--prefix", dir.path});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);

    auto v = run({dir.path + "/bin/gmemscope", "--version"});
    CHECK(v.exit_code == 0);
    CHECK_THAT(v.out, Catch::StartsWith("gmemscope "));

    std::ifstream unit(dir.path + "/lib/systemd/system/gmemscope-daemon.service");
    std::stringstream text;
    text << unit.rdbuf();
    CHECK_THAT(text.str(), Catch::Contains("ExecStart=" + dir.path + "/bin/gmemscope daemon"));
    CHECK(fs::exists(dir.path + "/share/gmemscope/schemas/summary.schema.json"));

    std::string man = dir.path + "/share/man/man1/";
    for (auto sub : {"", "-hooks", "-trace", "-record", "-report", "-stress", "-explain", "-export", "-top", "-audit",
                     "-daemon", "-enforce", "-pin"}) {
        std::string page = man + "gmemscope" + sub + ".1";
        INFO(page);
        CHECK(fs::exists(page));
    }
    GMS_SKIP_IF(run({"sh", "-c", "command -v man"}).exit_code == 0 ? "" : "no man (apt-get install man-db)");
    auto page = run({"sh", "-c", "MANWIDTH=100 man -l -P cat " + gms::test::shell_quote(man + "gmemscope-record.1") +
                                     " 2>&1"});
    INFO(page.out);
    CHECK(page.exit_code == 0);
    CHECK_THAT(page.out, Catch::Contains("--force") && Catch::Contains("FILE.old") && Catch::Contains("EXIT STATUS"));
    page = run({"sh", "-c", "man -l -P cat " + gms::test::shell_quote(man + "gmemscope-pin.1") + " 2>&1"});
    CHECK_THAT(page.out, Catch::Contains("pin add") && Catch::Contains("--size"));

    std::string completion = dir.path + "/share/bash-completion/completions/gmemscope";
    REQUIRE(fs::exists(completion));
    GMS_SKIP_IF(run({"sh", "-c", "command -v bash"}).exit_code == 0 ? "" : "no bash");
    auto complete = [&](const std::string& words, int cword) {
        return run({"bash", "-c", "source " + gms::test::shell_quote(completion) + "; COMP_WORDS=(" + words +
                                      "); COMP_CWORD=" + std::to_string(cword) + "; _gmemscope; echo ${COMPREPLY[*]}"})
            .out;
    };
    CHECK(complete("gmemscope rep", 1) == "report\n");
    CHECK(complete("gmemscope record --f", 2) == "--force\n");
    CHECK(complete("gmemscope pin a", 2) == "add\n");

}
