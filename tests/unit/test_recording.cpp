// Recordings: cut short by a signal they stay valid; truncated or
// corrupt ones are refused with the offset of the bad record.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <catch2/catch.hpp>

#include "helpers.hpp"
#include "loader/recording.hpp"

namespace fs = std::filesystem;

namespace {

// Records a punch storm and stops the recorder with `sig` after 3 s: long
// enough, on a loaded machine, for its attach and one periodic counters record.
std::string record_cut_by(int sig)
{
    std::string path = fs::temp_directory_path() / ("gms_test_" + std::to_string(sig) + ".rec");
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(gms::test::binary().c_str(), "gmemscope", "record", "-o", path.c_str(), "--",
              gms::test::binary().c_str(), "stress", "punch-storm", "duration_ms=20000", nullptr);
        _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));
    kill(pid, sig);
    int st = 0;
    waitpid(pid, &st, 0);
    REQUIRE(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    return path;
}

struct ReadAll {
    uint64_t records = 0;
    gms_drops_record last{};
};

ReadAll read_all(const std::string& path)
{
    gms::RecordingReader r(path);
    ReadAll out;
    while (auto ev = r.next()) {
        out.records++;
        if (ev->type() == GMS_REC_DROPS)
            out.last = std::get<gms_drops_record>(ev->rec);
    }
    return out;
}

void copy_prefix(const std::string& from, const std::string& to, uint64_t bytes)
{
    fs::copy_file(from, to, fs::copy_options::overwrite_existing);
    fs::resize_file(to, bytes);
}

}  // namespace

TEST_CASE("a recording stopped by SIGINT or SIGTERM is complete and valid", "[recording][live]")
{
    GMS_REQUIRE_LIVE();
    for (int sig : {SIGINT, SIGTERM}) {
        INFO("signal " << sig);
        std::string path = record_cut_by(sig);
        ReadAll all = read_all(path);
        CHECK(all.records > 1000);
        CHECK((all.last.hdr.flags & GMS_F_FINAL));
        CHECK(all.last.received + 1 < all.records);  // the periodic counters records come on top
        gms::RecordingReader r(path);
        CHECK(r.meta().at("clock") == "CLOCK_MONOTONIC");
        CHECK_FALSE(r.meta().at("attached").empty());
        fs::remove(path);
    }
}

TEST_CASE("truncated and corrupt recordings are refused at the offset of the bad record", "[recording]")
{
    // A golden recording: the format's checks need no kernel.
    gms::test::ScratchDir dir;
    std::string good = dir.path + "/rebind.rec", bad = good + ".bad";
    fs::copy_file(gms::test::source_dir() + "/tests/golden/rebind.rec", good);
    // The offsets of the first records.
    std::vector<uint64_t> offsets;
    {
        gms::RecordingReader r(good);
        for (int i = 0; i < 3; i++) {
            offsets.push_back(r.offset());
            REQUIRE(r.next());
        }
    }
    SECTION("cut inside a record")
    {
        copy_prefix(good, bad, offsets[1] + 10);
        CHECK_THROWS_WITH(read_all(bad), Catch::Contains("offset " + std::to_string(offsets[1])) &&
                                             Catch::Contains("truncated"));
    }
    SECTION("cut between records: the end record is missing")
    {
        copy_prefix(good, bad, offsets[2]);
        CHECK_THROWS_WITH(read_all(bad), Catch::Contains("offset " + std::to_string(offsets[2])) &&
                                             Catch::Contains("cut short"));
    }
    SECTION("a record with a bad type")
    {
        fs::copy_file(good, bad, fs::copy_options::overwrite_existing);
        std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(std::streamoff(offsets[1]));
        uint16_t type = 0x4242;
        f.write(reinterpret_cast<const char*>(&type), sizeof(type));
        f.close();
        CHECK_THROWS_WITH(read_all(bad), Catch::Contains("offset " + std::to_string(offsets[1])) &&
                                             Catch::Contains("corrupt"));
    }
    SECTION("not a recording")
    {
        std::ofstream(bad) << "hello";
        CHECK_THROWS_WITH(read_all(bad), Catch::Contains("not a gmemscope recording"));
    }
    SECTION("report says so with exit code 5")
    {
        copy_prefix(good, bad, offsets[1] + 10);
        auto r = gms::test::run({gms::test::binary(), "report", "-i", bad});
        CHECK(r.exit_code == 5);
        CHECK_THAT(r.err, Catch::StartsWith("error: ") && Catch::Contains("offset"));
    }
}
