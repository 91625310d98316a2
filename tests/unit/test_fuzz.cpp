// The libFuzzer target over the recording reader, the engine and the
// reports (tests/fuzz/fuzz_recording.cpp), run for 60 s from the seeds, the
// golden recordings and the kept regressions. By hand, for as long as
// wanted: build/fuzz_recording -max_total_time=600 CORPUS tests/fuzz/seeds ...
#include <catch2/catch.hpp>

#include "helpers.hpp"

TEST_CASE("the recording fuzzer finds nothing in 60 s", "[fuzz]")
{
#ifndef GMS_FUZZER
    GMS_SKIP_IF("this build has no libFuzzer target (clang cannot build one here, or the VM lane's static build)");
#else
    gms::test::ScratchDir corpus;
    std::string src = gms::test::source_dir();
    auto r = gms::test::run({GMS_FUZZER, "-max_total_time=60", "-timeout=10", "-rss_limit_mb=2048",
                             "-print_final_stats=1", "-artifact_prefix=" + src + "/tests/fuzz/regressions/",
                             corpus.path, src + "/tests/fuzz/seeds", src + "/tests/golden",
                             src + "/tests/fuzz/regressions"});
    INFO(r.err.substr(r.err.size() > 4000 ? r.err.size() - 4000 : 0));
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.err, Catch::Contains("stat::number_of_executed_units"));
#endif
}
