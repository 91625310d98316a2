// Recordings: cut short by a signal they stay valid; truncated, cut or
// damaged ones give everything before the damage and say what was lost;
// hand-made (SYNTHETIC, built here) hostile ones are read in bounded
// time; nothing a user has is overwritten.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstddef>
#include <cstring>
#include <random>
#include <sstream>
#include <filesystem>
#include <fstream>
#include <thread>

#include <catch2/catch.hpp>

#include "helpers.hpp"
#include <nlohmann/json.hpp>
#include "loader/capture/recording.hpp"
#include "synthetic.hpp"

using gms::test::binary;
using gms::test::run;

namespace fs = std::filesystem;

namespace {

// Until `path` holds its first blocks (the tracer attached and the
// storm runs: attaching takes seconds on a loaded machine, a minute or
// more under the VM lane's emulation), then 1.5 s more, so that a
// periodic counters record is in it.
void wait_for_records(const std::string& path)
{
    std::error_code ec;
    gms::test::wait_until([&] { return fs::exists(path, ec) && fs::file_size(path, ec) > (200u << 10); },
                          std::chrono::seconds(60));
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
}

// Records a punch storm and stops the recorder with `sig` once it runs.
std::string record_cut_by(int sig)
{
    std::string path = fs::temp_directory_path() / ("gms_test_" + std::to_string(sig) + ".rec");
    fs::remove(path);
    fs::remove(path + ".old");
    pid_t test = getpid(), pid = fork();
    if (pid == 0) {
        gms::test::die_with_test(test);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(gms::test::binary().c_str(), "gmemscope", "record", "-o", path.c_str(), "--",
              gms::test::binary().c_str(), "stress", "punch-storm", "duration_ms=20000", nullptr);
        _exit(127);
    }
    wait_for_records(path);
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

// SYNTHETIC records, built here: the hostile recordings a user or a
// fuzzer could hand gmemscope.
namespace syn {

constexpr uint64_t kVm = 0xffff888100002000;
constexpr uint64_t kIno = 91;

gms::Event ioctl(uint64_t ts, uint16_t op, int64_t ret)
{
    return {gms::syn::ioctl(ts, op, kVm, ret)};
}

gms::Event create_vm(uint64_t ts)
{
    auto e = std::get<gms_ioctl_event>(ioctl(ts, GMS_IOC_CREATE_VM, 4).rec);
    e.vm = 0;
    e.args.create_vm.vm = kVm;
    return {e};
}

// Memslot 1 at gpa 0, `bytes` long, bound to gmem kIno from offset 0.
gms::Event region(uint64_t ts, uint64_t bytes)
{
    auto e = std::get<gms_ioctl_event>(ioctl(ts, GMS_IOC_SET_MEMORY_REGION2, 0).rec);
    e.args.region.slot = 1;
    e.args.region.flags = 4;   // KVM_MEM_GUEST_MEMFD
    e.args.region.size = bytes;
    e.args.region.uaddr = 0x7f0000000000;
    e.args.region.gmem_ino = kIno;
    return {e};
}

gms::Event pagecache(uint64_t ts, uint32_t type, uint64_t index, uint32_t order)
{
    auto e = gms::syn::record<gms_pagecache_event>(type, ts);
    e.ino = kIno;
    e.index = index;
    e.pfn = 0x100000 + index;
    e.order = order;
    return {e};
}

gms::Event punch(uint64_t ts, uint64_t offset, uint64_t len)
{
    auto e = gms::syn::record<gms_fallocate_event>(GMS_EV_FALLOCATE, ts);
    e.vm = kVm;
    e.gmem_ino = kIno;
    e.offset = offset;
    e.len = len;
    e.mode = 3;   // FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
    e.dur_ns = 1000;
    return {e};
}

gms_drops_record counters(uint64_t ts, uint64_t received)
{
    auto c = gms::syn::record<gms_drops_record>(GMS_REC_DROPS, ts);
    c.received = received;
    return c;
}

nlohmann::json meta()
{
    return {{"format", "gmemscope-recording"}, {"kernel", "synthetic"}, {"clock", "CLOCK_MONOTONIC"},
            {"command", nlohmann::json::array()}, {"attached", nlohmann::json::array()}};
}

// A format-1 recording (records without blocks, as gmemscope wrote them
// before format 2), which every gmemscope reads: `meta` verbatim.
void write_v1(const std::string& path, const std::string& meta, const std::vector<gms::Event>& events)
{
    std::string m = meta;
    m.resize((m.size() + 7) / 8 * 8, ' ');
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(gms::kRecordingMagic, 8);
    uint32_t fields[4] = {1, GMS_ABI_VERSION, uint32_t(m.size()), 0};
    out.write(reinterpret_cast<const char*>(fields), sizeof(fields));
    out << m;
    for (const auto& ev : events)
        std::visit([&](const auto& r) { out.write(reinterpret_cast<const char*>(&r), sizeof(r)); }, ev.rec);
    auto end = counters(1u << 30, events.size());
    end.hdr.flags |= GMS_F_FINAL;
    out.write(reinterpret_cast<const char*>(&end), sizeof(end));
}

// A format-2 recording of `n` punches with a counters record every 100.
std::string write_storm(const std::string& path, int n, bool finish = true)
{
    gms::RecordingWriter w(path, meta(), true);
    w.write(create_vm(1));
    w.write(region(2, 1 << 20));
    for (int i = 0; i < n; i++) {
        w.write(punch(10 + uint64_t(i), uint64_t(i % 256) << 12, 4096));
        if (i % 100 == 99)
            w.write({counters(10 + uint64_t(i), uint64_t(i + 3))});
    }
    if (finish)
        w.finish(counters(1u << 30, uint64_t(n) + 2));
    return path;
}

std::string slurp(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The offsets of a format-2 recording's blocks, walked by their headers.
std::vector<uint64_t> blocks(const std::string& bytes)
{
    uint32_t meta_bytes = 0;
    std::memcpy(&meta_bytes, bytes.data() + 16, 4);
    std::vector<uint64_t> at;
    for (uint64_t off = 24 + meta_bytes; off + 16 <= bytes.size();) {
        at.push_back(off);
        uint32_t len = 0;
        std::memcpy(&len, bytes.data() + off + 4, 4);
        off += 16 + len;
    }
    return at;
}

// A block's checksum made right again after its header was changed.
void fix_block_crc(std::string& bytes, uint64_t block)
{
    uint32_t len = 0, zero = 0;
    std::memcpy(&len, bytes.data() + block + 4, 4);
    std::string head = bytes.substr(block, 16);
    std::memcpy(head.data() + 12, &zero, 4);
    uint32_t crc = gms::crc32c(std::as_bytes(std::span{bytes.data() + block + 16, len}),
                               gms::crc32c(std::as_bytes(std::span{head})));
    std::memcpy(bytes.data() + block + 12, &crc, 4);
}

void spit(const std::string& path, const std::string& bytes)
{
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

struct Salvaged {
    uint64_t records = 0, punches = 0, salvaged = 0;
    std::vector<gms::Damage> damage;
    std::string text;
    nlohmann::json meta;
};

Salvaged salvage(const std::string& path)
{
    gms::RecordingReader r(path);
    Salvaged out;
    while (auto ev = r.next()) {
        out.records++;
        out.punches += ev->type() == GMS_EV_FALLOCATE;
        out.salvaged += r.salvaged();
    }
    CHECK(out.salvaged == r.records_salvaged());
    out.damage = r.damage();
    out.text = r.damage_text();
    out.meta = r.meta();
    return out;
}

}  // namespace syn

void copy_prefix(const std::string& from, const std::string& to, uint64_t bytes)
{
    fs::copy_file(from, to, fs::copy_options::overwrite_existing);
    fs::resize_file(to, bytes);
}

bool link_path_ok(const std::string& from, const std::string& to)
{
    return link(from.c_str(), to.c_str()) == 0;
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


TEST_CASE("hand-made recordings whose sizes claim more than they hold are read in bounded time", "[recording]")
{
    gms::test::ScratchDir dir;
    std::string rec = dir.path + "/huge.rec";
    // One memslot of 2^44 bytes (2^32 pages) and page-cache deletes of
    // order 32, 64 and 200: per-page loops would take hours or shift by 64.
    // A punch of 2^63 bytes lands in the histogram's last bucket; an ioctl
    // returns INT64_MIN, which cannot be negated.
    syn::write_v1(rec, syn::meta().dump(),
                  {syn::create_vm(1), syn::region(2, 1ull << 44), syn::pagecache(3, GMS_EV_PAGECACHE_ADD, 0, 32),
                   syn::pagecache(4, GMS_EV_PAGECACHE_DEL, 0, 32), syn::pagecache(5, GMS_EV_PAGECACHE_DEL, 8, 64),
                   syn::pagecache(6, GMS_EV_PAGECACHE_DEL, 1ull << 40, 200), syn::punch(7, 0, 1ull << 63),
                   syn::ioctl(8, GMS_IOC_SET_MEMORY_ATTRIBUTES, INT64_MIN)});
    std::vector<std::vector<std::string>> commands = {
        {"report", "-i", rec},
        {"explain", "-i", rec, "--gfn", "0x5"},
        {"export", "-i", rec, "-o", dir.path + "/huge.json"},
        {"audit", "--procfs", "-i", rec},
    };
    for (auto argv : commands) {
        argv.insert(argv.begin(), {"timeout", "60", binary()});
        auto r = run(argv);
        INFO(argv[3] << ": exit " << r.exit_code << "\n" << r.err);
        CHECK(r.exit_code == 0);   // timeout(1) says 124
        if (argv[3] == "report") {
            CHECK_THAT(r.out, Catch::Contains("[8E, 16E)"));
            CHECK_THAT(r.out, !Catch::Contains("[8E, 1)"));
        }
    }
    auto r = run({"timeout", "60", binary(), "report", "-i", rec});
    CHECK_THAT(r.out, Catch::Contains("failed -9223372036854775808 (not an errno)"));
    CHECK_THAT(r.out, !Catch::Contains("--9223372036854775808") && !Catch::Contains(" -0 ("));
}

TEST_CASE("report -i of a FIFO or a directory is a clear error, not a hang", "[recording]")
{
    gms::test::ScratchDir dir;
    std::string fifo = dir.path + "/fifo";
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
    auto r = run({"timeout", "20", binary(), "report", "-i", fifo});
    CHECK(r.exit_code == 5);
    CHECK_THAT(r.err, Catch::Contains("a FIFO, not a recording file"));
    r = run({"timeout", "20", binary(), "report", "-i", dir.path});
    CHECK(r.exit_code == 5);
    CHECK_THAT(r.err, Catch::Contains("a directory, not a recording file"));
}

TEST_CASE("metadata of the wrong JSON type is a corrupt recording, exit 5, under --json too", "[recording]")
{
    gms::test::ScratchDir dir;
    std::string rec = dir.path + "/meta.rec";
    syn::write_v1(rec, R"({"kernel":5,"clock":"CLOCK_MONOTONIC"})", {syn::create_vm(1)});
    auto r = run({binary(), "report", "-i", rec});
    CHECK(r.exit_code == 5);
    CHECK_THAT(r.err, Catch::StartsWith("error: ") && Catch::Contains("\"kernel\" is number"));
    r = run({binary(), "--json", "report", "-i", rec});
    CHECK(r.exit_code == 5);
    CHECK_THAT(nlohmann::json::parse(r.out).at("error").get<std::string>(), Catch::Contains("\"kernel\""));
    for (auto bad : {R"({"command":"ls"})", R"({"attached":[1]})", R"({"start_monotonic_ns":-1})"}) {
        syn::write_v1(rec, bad, {});
        r = run({binary(), "report", "-i", rec});
        INFO(bad);
        CHECK(r.exit_code == 5);
    }
}

TEST_CASE("export never destroys its input and leaves nothing behind when it fails", "[recording]")
{
    gms::test::ScratchDir dir;
    std::string rec = syn::write_storm(dir.path + "/a.rec", 50), link = dir.path + "/b.rec";
    std::string before = syn::slurp(rec);
    REQUIRE(link_path_ok(rec, link));
    for (const auto& out : {rec, link, dir.path + "/./a.rec"}) {
        auto r = run({binary(), "export", "-i", rec, "-o", out});
        INFO(out << ": " << r.err);
        CHECK(r.exit_code == 2);
        CHECK(syn::slurp(rec) == before);
    }
    // A corrupt input: no output file, no temporary left.
    std::string bad = dir.path + "/bad.rec", out = dir.path + "/out.json";
    std::ofstream(bad) << "not a recording at all";
    auto r = run({binary(), "export", "-i", bad, "-o", out});
    CHECK(r.exit_code == 5);
    CHECK_FALSE(fs::exists(out));
    size_t files = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path))
        files++;
    CHECK(files == 3);   // a.rec, b.rec, bad.rec
    r = run({binary(), "export", "-i", rec, "-o", out});
    CHECK(r.exit_code == 0);
    CHECK(nlohmann::json::parse(syn::slurp(out)).contains("traceEvents"));
}

TEST_CASE("a cut or damaged recording gives everything before the damage, says what was lost, exit 6",
          "[recording]")
{
    SKIP_WITHOUT_VALIDATOR();
    gms::test::ScratchDir dir;
    std::string good = syn::write_storm(dir.path + "/good.rec", 1000), bad = dir.path + "/bad.rec";
    uint64_t size = fs::file_size(good);
    auto read = [](const std::string& path) {
        gms::RecordingReader r(path);
        uint64_t punches = 0;
        while (auto ev = r.next())
            punches += ev->type() == GMS_EV_FALLOCATE;
        return std::pair{punches, r.damage_text()};
    };
    auto whole = read(good);
    CHECK(whole.first == 1000);
    CHECK(whole.second.empty());

    SECTION("cut inside a block: the blocks before it are read")
    {
        copy_prefix(good, bad, size / 2 + 3);
        auto [punches, why] = read(bad);
        CHECK(punches >= 400);
        CHECK(punches < 600);
        CHECK_THAT(why, Catch::Contains("cut short") && Catch::Contains("bytes could not be read"));
        auto r = run({binary(), "report", "-i", bad});
        CHECK(r.exit_code == 6);
        CHECK_THAT(r.out, Catch::Contains("punch"));
        CHECK_THAT(r.err, Catch::StartsWith("error: ") && Catch::Contains("damaged recording") &&
                              Catch::Contains("events received"));
        // Under --json, one document: the damage is inside it.
        r = run({binary(), "--json", "report", "-i", bad});
        CHECK(r.exit_code == 6);
        REQUIRE(std::count(r.out.begin(), r.out.end(), '\n') == 1);
        gms::test::require_valid(r.out, "summary");
        auto doc = nlohmann::json::parse(r.out);
        CHECK(doc.at("type") == "summary");
        CHECK_THAT(doc.at("damage").at("message").get<std::string>(), Catch::Contains("damaged"));
        CHECK(doc.at("damage").at("stretches").at(0).at("cause") == "cut_short");
    }
    SECTION("a flipped bit in the middle: that block is lost, the rest is read")
    {
        fs::copy_file(good, bad, fs::copy_options::overwrite_existing);
        std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(std::streamoff(size / 2));
        char c = 0;
        f.read(&c, 1);
        c ^= 0x10;
        f.seekp(std::streamoff(size / 2));
        f.write(&c, 1);
        f.close();
        auto [punches, why] = read(bad);
        CHECK(punches >= 900);   // the block's records are walked while their headers are plausible
        CHECK_THAT(why, Catch::Contains("checksum mismatch in the block at offset"));
        CHECK_THAT(why, !Catch::Contains("cut short"));
        for (auto sub : {"report", "explain", "audit"}) {
            std::vector<std::string> argv = {binary(), sub, "-i", bad};
            if (std::string(sub) == "explain")
                argv.insert(argv.end(), {"--gfn", "1"});
            if (std::string(sub) == "audit")
                argv.push_back("--procfs");
            auto r = run(argv);
            INFO(sub << ": " << r.err);
            CHECK(r.exit_code == 6);
            // Under --json, one document holding its damage, and the same exit code.
            argv.insert(argv.begin() + 1, "--json");
            r = run(argv);
            CHECK(r.exit_code == 6);
            REQUIRE(std::count(r.out.begin(), r.out.end(), '\n') == 1);
            gms::test::require_valid(r.out, std::string(sub) == "report" ? "summary" : sub);
            CHECK(nlohmann::json::parse(r.out).at("damage").at("stretches").at(0).at("cause") == "checksum_mismatch");
        }
        auto r = run({binary(), "export", "-i", bad, "-o", dir.path + "/salvaged.json"});
        CHECK(r.exit_code == 6);
        CHECK(fs::exists(dir.path + "/salvaged.json"));
    }
    SECTION("the recorder stopped without its end (an error, a full disk)")
    {
        syn::write_storm(bad, 1000, false);
        auto [punches, why] = read(bad);
        CHECK(punches == 1000);   // the writer's destructor wrote the last block
        CHECK_THAT(why, Catch::Contains("cut short"));
    }
    SECTION("not a recording at all is still exit 5")
    {
        std::ofstream(bad) << "hello";
        CHECK(run({binary(), "report", "-i", bad}).exit_code == 5);
    }
}

namespace {

constexpr size_t kIoctl = sizeof(gms_ioctl_event), kPunch = sizeof(gms_fallocate_event);

const gms::Damage& only_damage(const syn::Salvaged& s)
{
    INFO(s.text);
    REQUIRE(s.damage.size() == 1);
    return s.damage[0];
}

}  // namespace

TEST_CASE("salvage: a cut inside a block gives back every whole record before the cut", "[recording][salvage]")
{
    gms::test::ScratchDir dir;
    std::string rec = syn::write_storm(dir.path + "/one.rec", 20), bad = dir.path + "/cut.rec";
    std::string bytes = syn::slurp(rec);
    auto blocks = syn::blocks(bytes);
    REQUIRE(blocks.size() == 1);   // create, region, 20 punches, the final counters: 23 records
    uint64_t cut = blocks[0] + 16 + 2 * kIoctl + 10 * kPunch;
    syn::spit(bad, bytes.substr(0, cut + 5));
    auto s = syn::salvage(bad);
    CHECK(s.records == 12);
    CHECK(s.punches == 10);
    CHECK(s.salvaged == 12);   // the cut block could not be checked
    const auto& d = only_damage(s);
    CHECK(d.cause == "cut_short");
    CHECK(d.offset == cut);
    CHECK(d.bytes == 5);
    REQUIRE(d.records_lost);
    CHECK(*d.records_lost == 11);   // the block's header says 23
    CHECK_THAT(s.text, Catch::Contains("cut short") && Catch::Contains("11 records lost") &&
                           Catch::Contains("12 records were read back from blocks that failed their check"));
}

TEST_CASE("salvage: a full disk's partial last block and a missing block are counted in records",
          "[recording][salvage]")
{
    SKIP_WITHOUT_VALIDATOR();
    gms::test::ScratchDir dir;
    std::string rec = syn::write_storm(dir.path + "/storm.rec", 1000), bad = dir.path + "/full.rec";
    std::string bytes = syn::slurp(rec);
    auto b = syn::blocks(bytes);
    // A counters record every 100 punches ends a block: 10 blocks of 100
    // punches and their counters (the first also creates the VM and its
    // memslot), then the final counters alone.
    REQUIRE(b.size() == 11);
    // Block 3 never reached the disk, block 6 did only up to 36 whole punches.
    uint64_t cut = b[6] + 16 + 36 * kPunch + 7;
    syn::spit(bad, bytes.substr(0, b[3]) + bytes.substr(b[4], cut - b[4]));
    auto s = syn::salvage(bad);
    CHECK(s.punches == 536);
    INFO(s.text);
    REQUIRE(s.damage.size() == 2);
    CHECK(s.damage[0].cause == "missing_records");
    CHECK(s.damage[0].records_lost == std::optional<uint64_t>(100));   // the counters of block 4 say so
    CHECK(s.damage[1].cause == "cut_short");
    CHECK(s.damage[1].offset == cut - 7 - (b[4] - b[3]));
    CHECK(s.damage[1].records_lost == std::optional<uint64_t>(65));   // 100 punches and a counters record, 36 read
    CHECK_THAT(s.text, Catch::Contains("165 records lost") && Catch::Contains("cut short"));
    auto r = run({binary(), "--json", "report", "-i", bad});
    CHECK(r.exit_code == 6);
    gms::test::require_valid(r.out, "summary");
    CHECK(nlohmann::json::parse(r.out).at("damage").at("records_lost") == 165);
}

TEST_CASE("salvage: one flipped byte in the only block is a checksum mismatch, not a cut", "[recording][salvage]")
{
    gms::test::ScratchDir dir;
    std::string rec = syn::write_storm(dir.path + "/one.rec", 20), bad = dir.path + "/flip.rec";
    std::string bytes = syn::slurp(rec);
    auto blocks = syn::blocks(bytes);
    REQUIRE(blocks.size() == 1);
    uint64_t punch5 = blocks[0] + 16 + 2 * kIoctl + 5 * kPunch;
    SECTION("in a record's payload: every record is read back, from a block that failed its check")
    {
        std::string flipped = bytes;
        flipped[punch5 + offsetof(gms_fallocate_event, len)] ^= 0x40;
        syn::spit(bad, flipped);
        auto s = syn::salvage(bad);
        CHECK(s.records == 23);
        CHECK(s.salvaged == 23);
        const auto& d = only_damage(s);
        CHECK(d.cause == "checksum_mismatch");
        CHECK(d.offset == blocks[0]);
        CHECK(d.bytes == 0);
        CHECK(d.records_lost == std::optional<uint64_t>(0));
        CHECK_THAT(s.text, Catch::Contains("checksum mismatch in the block at offset " + std::to_string(blocks[0])));
        CHECK_THAT(s.text, !Catch::Contains("cut short"));
    }
    SECTION("in a record's header: the records before it are read back, the rest is counted")
    {
        std::string flipped = bytes;
        flipped[punch5] ^= 0x01;   // its type
        syn::spit(bad, flipped);
        auto s = syn::salvage(bad);
        CHECK(s.records == 7);
        const auto& d = only_damage(s);
        CHECK(d.cause == "checksum_mismatch");
        CHECK(d.records_lost == std::optional<uint64_t>(16));
        CHECK(d.bytes == bytes.size() - punch5);
        CHECK_THAT(s.text, Catch::Contains("checksum mismatch") && !Catch::Contains("cut short"));
    }
    SECTION("in the block header's length: the records' own checksum still holds")
    {
        std::string flipped = bytes;
        flipped[blocks[0] + 4] ^= 0x08;
        syn::spit(bad, flipped);
        auto s = syn::salvage(bad);
        CHECK(s.records == 23);
        const auto& d = only_damage(s);
        CHECK(d.cause == "checksum_mismatch");
        CHECK_THAT(s.text, Catch::Contains("its records are intact") && !Catch::Contains("cut short"));
    }
}

TEST_CASE("salvage: one flipped byte in the metadata costs the metadata, not the events", "[recording][salvage]")
{
    gms::test::ScratchDir dir;
    std::string rec = syn::write_storm(dir.path + "/storm.rec", 1000), bad = dir.path + "/meta.rec";
    std::string bytes = syn::slurp(rec);
    bytes[24 + 3] ^= 0x20;
    syn::spit(bad, bytes);
    auto s = syn::salvage(bad);
    CHECK(s.punches == 1000);
    CHECK(s.salvaged == 0);
    CHECK(s.meta == nlohmann::json::object());
    const auto& d = only_damage(s);
    CHECK(d.cause == "metadata");
    CHECK(d.offset == 24);
    CHECK_THAT(s.text, Catch::Contains("the metadata (kernel, clock, hooks attached) is lost"));
    auto r = run({binary(), "report", "-i", bad});
    CHECK(r.exit_code == 6);
    CHECK_THAT(r.out, Catch::Contains("punch"));
}

TEST_CASE("salvage: a block header claiming 0xffffffff records, its checksum fixed, is damage",
          "[recording][salvage]")
{
    SKIP_WITHOUT_VALIDATOR();
    gms::test::ScratchDir dir;
    std::string rec = syn::write_storm(dir.path + "/one.rec", 20), bad = dir.path + "/count.rec";
    std::string bytes = syn::slurp(rec);
    auto blocks = syn::blocks(bytes);
    REQUIRE(blocks.size() == 1);
    uint32_t claim = 0xffffffff;
    std::memcpy(bytes.data() + blocks[0] + 8, &claim, 4);
    syn::fix_block_crc(bytes, blocks[0]);
    syn::spit(bad, bytes);
    auto s = syn::salvage(bad);
    CHECK(s.records == 23);
    CHECK(s.salvaged == 23);
    const auto& d = only_damage(s);
    CHECK(d.cause == "record_count");
    CHECK_FALSE(d.records_lost);
    CHECK_THAT(s.text, Catch::Contains("claims 4294967295 records (more than it has room for) but holds 23"));
    auto r = run({binary(), "--json", "report", "-i", bad});
    CHECK(r.exit_code == 6);
    gms::test::require_valid(r.out, "summary");
    CHECK(nlohmann::json::parse(r.out).at("damage").at("stretches").at(0).at("cause") == "record_count");
}

TEST_CASE("salvage: a sparse 16 GiB recording is answered within a second and 64 MB", "[recording][salvage]")
{
    gms::test::ScratchDir dir;
    std::string rec = syn::write_storm(dir.path + "/one.rec", 20), sparse = dir.path + "/sparse.rec";
    std::string bytes = syn::slurp(rec);
    auto blocks = syn::blocks(bytes);
    // The header and metadata, 16 GiB of hole, then the blocks.
    constexpr uint64_t kSize = 16ull << 30;
    std::string body = bytes.substr(blocks[0]);
    int fd = open(sparse.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, bytes.data(), blocks[0], 0) == ssize_t(blocks[0]));
    REQUIRE(pwrite(fd, body.data(), body.size(), off_t(kSize - body.size())) == ssize_t(body.size()));
    close(fd);
    struct stat st {};
    REQUIRE(stat(sparse.c_str(), &st) == 0);
    REQUIRE(uint64_t(st.st_size) == kSize);
    GMS_SKIP_IF(uint64_t(st.st_blocks) * 512 > (1u << 20) ? "this file system does not keep the file sparse" : "");

    std::string out = dir.path + "/out", err = dir.path + "/err";
    auto t0 = std::chrono::steady_clock::now();
    pid_t test = getpid(), pid = fork();
    if (pid == 0) {
        gms::test::die_with_test(test);
        int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(err.c_str(), O_WRONLY | O_CREAT, 0644);
        dup2(o, 1);
        dup2(e, 2);
        execl(binary().c_str(), "gmemscope", "report", "-i", sparse.c_str(), nullptr);
        _exit(127);
    }
    int status = 0;
    struct rusage ru {};
    REQUIRE(wait4(pid, &status, 0, &ru) == pid);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(syn::slurp(err));
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 6);
    CHECK_THAT(syn::slurp(out), Catch::Contains("punch"));
    CHECK_THAT(syn::slurp(err), Catch::Contains("no block here"));
    INFO("report took " << s << " s and a max RSS of " << ru.ru_maxrss << " KiB");
    CHECK(s < 1.0);
    CHECK(ru.ru_maxrss < 64 * 1024);
}

TEST_CASE("a truncated or corrupt format-1 recording is read up to the offset of the bad record", "[recording]")
{
    // A golden recording (format 1): the format's checks need no kernel.
    gms::test::ScratchDir dir;
    std::string good = dir.path + "/rebind.rec", bad = good + ".bad";
    fs::copy_file(gms::test::source_dir() + "/tests/golden/rebind.rec", good);
    std::vector<uint64_t> offsets;
    {
        gms::RecordingReader r(good);
        for (int i = 0; i < 3; i++) {
            offsets.push_back(r.offset());
            REQUIRE(r.next());
        }
    }
    auto damage_of = [](const std::string& path) {
        gms::RecordingReader r(path);
        while (r.next()) {
        }
        return std::pair{r.records_read(), r.damage_text()};
    };
    SECTION("cut inside a record")
    {
        copy_prefix(good, bad, offsets[1] + 10);
        auto [records, why] = damage_of(bad);
        CHECK(records == 1);
        CHECK_THAT(why, Catch::Contains("offset " + std::to_string(offsets[1])) && Catch::Contains("truncated"));
    }
    SECTION("cut between records: the end record is missing")
    {
        copy_prefix(good, bad, offsets[2]);
        auto [records, why] = damage_of(bad);
        CHECK(records == 2);
        CHECK_THAT(why, Catch::Contains("offset " + std::to_string(offsets[2])) && Catch::Contains("cut short"));
    }
    SECTION("a record with a bad type")
    {
        fs::copy_file(good, bad, fs::copy_options::overwrite_existing);
        std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(std::streamoff(offsets[1]));
        uint16_t type = 0x4242;
        f.write(reinterpret_cast<const char*>(&type), sizeof(type));
        f.close();
        auto [records, why] = damage_of(bad);
        CHECK(records == 1);
        CHECK_THAT(why, Catch::Contains("offset " + std::to_string(offsets[1])) && Catch::Contains("corrupt"));
    }
    SECTION("not a recording")
    {
        std::ofstream(bad) << "hello";
        CHECK_THROWS_WITH(damage_of(bad), Catch::Contains("not a gmemscope recording"));
    }
    SECTION("report says so with exit code 6")
    {
        copy_prefix(good, bad, offsets[1] + 10);
        auto r = gms::test::run({gms::test::binary(), "report", "-i", bad});
        CHECK(r.exit_code == 6);
        CHECK_THAT(r.err, Catch::StartsWith("error: ") && Catch::Contains("offset " + std::to_string(offsets[1])));
    }
}

TEST_CASE("random bit flips in a recording are all detected", "[recording]")
{
    gms::test::ScratchDir dir;
    std::string good = syn::write_storm(dir.path + "/good.rec", 300), bad = dir.path + "/bad.rec";
    std::string bytes = syn::slurp(good);
    std::mt19937_64 rng(16);
    int detected = 0;
    for (int i = 0; i < 200; i++) {
        std::string flipped = bytes;
        size_t at = rng() % flipped.size();
        flipped[at] = char(flipped[at] ^ (1 << (rng() % 8)));
        std::ofstream(bad, std::ios::binary | std::ios::trunc) << flipped;
        try {
            gms::RecordingReader r(bad);
            while (r.next()) {
            }
            detected += !r.damage().empty();
            INFO("flip at " << at);
            CHECK_FALSE(r.damage().empty());
        } catch (const gms::BadRecording&) {
            detected++;
        }
    }
    CHECK(detected == 200);
}

TEST_CASE("format-1 recordings are still read, and salvaged when cut", "[recording]")
{
    gms::test::ScratchDir dir;
    std::string rec = dir.path + "/v1.rec";
    std::vector<gms::Event> events = {syn::create_vm(1), syn::region(2, 1 << 20)};
    for (int i = 0; i < 20; i++)
        events.push_back(syn::punch(10 + uint64_t(i), 0, 4096));
    syn::write_v1(rec, syn::meta().dump(), events);
    {
        gms::RecordingReader r(rec);
        CHECK(r.version() == 1);
        while (r.next()) {
        }
        CHECK(r.damage().empty());
        CHECK(r.records_read() == 23);
    }
    copy_prefix(rec, rec + ".cut", fs::file_size(rec) - 100);
    gms::RecordingReader r(rec + ".cut");
    while (r.next()) {
    }
    CHECK(r.records_read() == 22);   // the final counters record was cut
    REQUIRE(r.damage().size() == 1);
    CHECK_THAT(r.damage_text(), Catch::Contains("truncated") && Catch::Contains("cut short"));
}

TEST_CASE("record -o keeps an existing file as FILE.old and follows no symlink", "[recording]")
{
    gms::test::ScratchDir dir;
    std::string out = dir.path + "/x.rec", target = dir.path + "/target";
    std::ofstream(out) << "precious";
    {
        gms::RecordingWriter w(out, syn::meta());
        CHECK(w.note() == "the existing " + out + " was kept as " + out + ".old");
        w.finish(syn::counters(1, 0));
    }
    CHECK(syn::slurp(out + ".old") == "precious");
    // A symlink planted at the output: refused, neither moved nor
    // followed, with or without overwrite (tests/unit/test_outputs.cpp
    // has every other kind).
    std::ofstream(target) << "root's file";
    fs::remove(out);
    fs::create_symlink(target, out);
    CHECK_THROWS_WITH(gms::RecordingWriter(out, syn::meta(), true), Catch::Contains("symbolic link"));
    CHECK_THROWS_WITH(gms::RecordingWriter(out, syn::meta()), Catch::Contains("symbolic link"));
    CHECK(fs::is_symlink(out));
    CHECK(syn::slurp(target) == "root's file");
}

TEST_CASE("record -o through the CLI keeps FILE.old unless -f", "[recording][live]")
{
    GMS_REQUIRE_LIVE();
    gms::test::ScratchDir dir;
    std::string out = dir.path + "/r.rec";
    std::ofstream(out) << "precious";
    auto r = run({binary(), "record", "-o", out, "-d", "0.3"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(syn::slurp(out + ".old") == "precious");
    CHECK_THAT(r.err, Catch::Contains("kept as " + out + ".old"));
    r = run({binary(), "record", "-f", "-o", out, "-d", "0.3"});
    CHECK(r.exit_code == 0);
    CHECK(syn::slurp(out + ".old") == "precious");
}

namespace {

// A child of pid, 0 if none: the process whose /proc/N/stat names pid as
// its parent (/proc/PID/task/PID/children needs CONFIG_PROC_CHILDREN,
// which the lane's conversion kernel leaves out).
pid_t child_of(pid_t pid)
{
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        std::string name = entry.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos)
            continue;
        std::ifstream in(entry.path() / "stat");
        std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        // pid (comm) state ppid ...: comm may hold spaces and parentheses
        auto close = stat.rfind(')');
        if (close == std::string::npos)
            continue;
        std::istringstream rest(stat.substr(close + 1));
        std::string state;
        pid_t ppid = 0;
        if (rest >> state >> ppid && ppid == pid)
            return std::stoi(name);
    }
    return 0;
}

// A punch storm recorded to `path` and the recorder killed by SIGKILL once it runs.
gms::test::Run record_killed(const std::string& path, pid_t* command = nullptr)
{
    gms::test::Background rec({binary(), "record", "-o", path, "--", binary(), "stress", "punch-storm",
                               "duration_ms=20000"});
    wait_for_records(path);
    if (command)
        *command = child_of(rec.pid());
    return rec.stop(SIGKILL);
}

}  // namespace

TEST_CASE("a recording cut by SIGKILL mid-storm: report prints the events before the cut and the loss, and the "
          "command dies with its recorder",
          "[recording][live]")
{
    GMS_REQUIRE_LIVE();
    gms::test::ScratchDir dir;
    std::string rec = dir.path + "/killed.rec";
    pid_t command = 0;
    record_killed(rec, &command);
    REQUIRE(command > 0);
    // PR_SET_PDEATHSIG: the traced command does not run on as an orphan.
    bool gone = false;
    for (int i = 0; i < 50 && !gone; i++) {
        gone = kill(command, 0) != 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(gone);
    auto r = run({binary(), "report", "-i", rec});
    INFO(r.err);
    CHECK(r.exit_code == 6);
    CHECK_THAT(r.out, Catch::Contains("punch"));
    CHECK_THAT(r.err, Catch::Contains("cut short") && Catch::Contains("events received"));
    gms::RecordingReader reader(rec);
    uint64_t punches = 0;
    while (auto ev = reader.next())
        punches += ev->type() == GMS_EV_FALLOCATE;
    CHECK(punches > 1000);
}

TEST_CASE("a recording stopped by a full disk (256 KiB tmpfs) is read up to the last block that fit",
          "[recording][live]")
{
    GMS_REQUIRE_LIVE();
    gms::test::ScratchDir dir;
    std::string mnt = dir.path + "/small";
    fs::create_directory(mnt);
    REQUIRE(mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=256k") == 0);
    std::string rec = mnt + "/full.rec";
    auto r = run({"timeout", "60", binary(), "record", "-o", rec, "--", binary(), "stress", "punch-storm",
                  "duration_ms=20000"});
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("No space left on device"));
    auto rep = run({binary(), "report", "-i", rec});
    INFO(rep.err);
    CHECK(rep.exit_code == 6);
    CHECK_THAT(rep.out, Catch::Contains("punch"));
    CHECK_THAT(rep.err, Catch::Contains("damaged recording") && Catch::Contains("cut short"));
    umount2(mnt.c_str(), MNT_DETACH);
}
