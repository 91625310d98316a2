// Every place gmemscope writes a path the user names (record -o, export
// -o, daemon --textfile) and every kind of thing that path can be: a
// stream (`-`, a pipe, /dev/stdout, a character device, a FIFO) is written
// in place; a regular file is replaced (or kept as FILE.old); everything
// else is refused before any BPF program is loaded, and nothing but a
// regular file is ever replaced or renamed.  Run as root in a scratch
// directory: the character device is made with mknod from /dev/null's
// numbers, the read-only directory is a read-only tmpfs.
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "loader/capture/recording.hpp"
#include "synthetic.hpp"

using gms::test::binary;
using gms::test::run;
using gms::test::shell_quote;

namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The names in `dir`: nothing may appear (a temporary file, a .old) or go.
std::set<std::string> names_in(const std::string& dir)
{
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir))
        names.insert(e.path().filename());
    return names;
}

// The scratch things a test writes to; each checked unchanged at the end.
struct Kinds {
    std::string dir, chardev, chardev_link, fifo, precious, file_link, dangling, subdir, ro;
    dev_t null_rdev = 0;

    explicit Kinds(const std::string& d)
        : dir(d), chardev(d + "/null"), chardev_link(d + "/null-link"), fifo(d + "/fifo"), precious(d + "/precious"),
          file_link(d + "/link-to-precious"), dangling(d + "/dangling"), subdir(d + "/subdir"), ro(d + "/ro")
    {
        struct stat st {};
        REQUIRE(stat("/dev/null", &st) == 0);
        null_rdev = st.st_rdev;
        REQUIRE(mknod(chardev.c_str(), S_IFCHR | 0666, null_rdev) == 0);
        fs::create_symlink(chardev, chardev_link);
        REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
        std::ofstream(precious) << "must stay intact";
        fs::create_symlink(precious, file_link);
        fs::create_symlink(d + "/nothing", dangling);
        fs::create_directory(subdir);
        fs::create_directory(ro);
        // As root, a 0555 directory is still writable: only a read-only
        // mount refuses root.
        REQUIRE(mount("tmpfs", ro.c_str(), "tmpfs", MS_RDONLY, "size=64k") == 0);
    }
    ~Kinds() { umount2(ro.c_str(), MNT_DETACH); }
    Kinds(const Kinds&) = delete;
    Kinds& operator=(const Kinds&) = delete;

    void check_intact() const
    {
        struct stat st {};
        REQUIRE(lstat(chardev.c_str(), &st) == 0);
        CHECK(S_ISCHR(st.st_mode));
        CHECK(st.st_rdev == null_rdev);
        CHECK(fs::is_symlink(chardev_link));
        CHECK(fs::read_symlink(chardev_link) == chardev);
        CHECK(fs::is_fifo(fs::symlink_status(fifo)));
        CHECK(slurp(precious) == "must stay intact");
        CHECK(fs::is_symlink(file_link));
        CHECK(fs::is_symlink(dangling));
        CHECK_FALSE(fs::exists(dir + "/nothing"));
        CHECK(fs::is_directory(fs::symlink_status(subdir)));
        CHECK(fs::is_empty(subdir));
        CHECK(fs::is_empty(ro));
    }
    // The paths that must be refused, with a word of the reason.
    std::vector<std::pair<std::string, std::string>> refused() const
    {
        return {{file_link, "symbolic link to a regular file"},
                {dangling, "symbolic link to nothing"},
                {subdir, "a directory"},
                {ro + "/out", "Read-only file system"}};
    }
};

std::string sh(const std::string& script)
{
    auto r = run({"sh", "-c", script});
    INFO(script << "\n" << r.err);
    REQUIRE(r.exit_code == 0);
    return r.out;
}

std::string golden_storm() { return gms::test::source_dir() + "/tests/golden/storm.rec"; }

// Whether `path` is a whole recording (its final counters read, no
// damage), and how many records it holds.
uint64_t whole_recording(const std::string& path)
{
    gms::RecordingReader r(path);
    while (r.next()) {
    }
    INFO(path << ": " << r.damage_text());
    CHECK(r.damage().empty());
    return r.records_read();
}

}  // namespace

TEST_CASE("export -o writes streams in place and replaces only regular files", "[outputs]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_ROOT();
    gms::test::ScratchDir scratch;
    Kinds k(scratch.path);
    const std::string rec = golden_storm(), gms = shell_quote(binary()), d = scratch.path;
    auto export_to = [&](const std::string& out) { return run({binary(), "export", "-i", rec, "-o", out}); };

    REQUIRE(export_to(d + "/new.json").exit_code == 0);
    const std::string want = slurp(d + "/new.json");
    REQUIRE(nlohmann::json::parse(want).at("traceEvents").size() > 10);

    std::ofstream(d + "/existing.json") << "an earlier trace";
    REQUIRE(export_to(d + "/existing.json").exit_code == 0);
    CHECK(slurp(d + "/existing.json") == want);

    for (const auto& out : {k.chardev, k.chardev_link}) {
        auto r = export_to(out);
        INFO(out << ": " << r.err);
        CHECK(r.exit_code == 0);
    }
    sh("cat " + shell_quote(k.fifo) + " > " + d + "/from-fifo & " + gms + " export -i " + rec + " -o " +
       shell_quote(k.fifo) + "; wait");
    CHECK(slurp(d + "/from-fifo") == want);
    CHECK(sh(gms + " export -i " + rec + " -o - | cat") == want);
    CHECK(sh(gms + " export -i " + rec + " -o /dev/stdout | cat") == want);
    // stdout redirected to a file: /dev/stdout is that file, written in place.
    sh(gms + " export -i " + rec + " -o /dev/stdout > " + d + "/redirected");
    CHECK(slurp(d + "/redirected") == want);

    for (const auto& [out, why] : k.refused()) {
        auto r = export_to(out);
        INFO(out << ": " << r.err);
        CHECK(r.exit_code == 1);
        CHECK_THAT(r.err, Catch::StartsWith("error: cannot write " + out) && Catch::Contains(why));
    }
    auto r = run({binary(), "--json", "export", "-i", rec, "-o", k.file_link});
    CHECK(r.exit_code == 1);
    gms::test::require_valid(r.out, "error");

    k.check_intact();
    CHECK(names_in(d) == std::set<std::string>{"null", "null-link", "fifo", "precious", "link-to-precious",
                                               "dangling", "subdir", "ro", "new.json", "existing.json",
                                               "from-fifo", "redirected"});
}

TEST_CASE("export stopped by SIGINT or SIGTERM leaves no temporary file", "[outputs]")
{
    gms::test::ScratchDir scratch;
    // Big enough that the export runs for a while: a storm of punches.
    const std::string rec = scratch.path + "/big.rec", out = scratch.path + "/out.json";
    {
        gms::RecordingWriter w(rec, {{"format", "gmemscope-recording"}, {"kernel", "synthetic"}});
        for (uint64_t i = 0; i < 400000; i++) {
            auto e = gms::syn::record<gms_fallocate_event>(GMS_EV_FALLOCATE, 1000 + i);
            e.vm = 0xffff888100002000;
            e.gmem_ino = 91;
            e.offset = (i % 256) << 12;
            e.len = 4096;
            e.mode = 3;   // FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
            w.write({e});
        }
        auto end = gms::syn::record<gms_drops_record>(GMS_REC_DROPS, 1u << 30);
        end.received = 400000;
        w.finish(end);
    }
    for (int sig : {SIGINT, SIGTERM}) {
        pid_t test = getpid(), pid = fork();
        if (pid == 0) {
            gms::test::die_with_test(test);
            execl(binary().c_str(), "gmemscope", "export", "-i", rec.c_str(), "-o", out.c_str(), nullptr);
            _exit(127);
        }
        // Until the temporary file is there: then the export is under way.
        bool seen = false;
        for (int i = 0; i < 20000 && !seen; i++) {
            for (const auto& name : names_in(scratch.path))
                seen = seen || name.starts_with(".out.json.");
            if (!seen)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        CHECK(seen);
        kill(pid, sig);
        int status = 0;
        REQUIRE(waitpid(pid, &status, 0) == pid);
        INFO("signal " << sig);
        REQUIRE(WIFSIGNALED(status));   // not finished before the signal came
        CHECK(WTERMSIG(status) == sig);
        CHECK(names_in(scratch.path) == std::set<std::string>{"big.rec"});
    }
}

TEST_CASE("record -o refuses what it must not replace before it loads anything", "[outputs]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_ROOT();
    gms::test::ScratchDir scratch;
    Kinds k(scratch.path);
    const std::string ran = scratch.path + "/ran";
    for (const auto& [out, why] : k.refused()) {
        // -v: libbpf's and the tracer's messages would show a load.
        auto r = run({binary(), "-v", "record", "-o", out, "--", "touch", ran});
        INFO(out << ": " << r.err);
        CHECK(r.exit_code == 1);
        CHECK_THAT(r.err, Catch::StartsWith("error: cannot write " + out) && Catch::Contains(why));
        CHECK_THAT(r.err, !Catch::Contains("libbpf"));
        CHECK_FALSE(fs::exists(ran));
    }
    // An earlier FILE.old that is not a regular file: neither FILE nor it moves.
    std::string out = scratch.path + "/x.rec";
    std::ofstream(out) << "the last recording";
    fs::create_symlink(k.precious, out + ".old");
    auto r = run({binary(), "record", "-o", out, "--", "touch", ran});
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("cannot keep the existing " + out + " as " + out + ".old") &&
                          Catch::Contains("a symbolic link"));
    CHECK(slurp(out) == "the last recording");
    CHECK(fs::is_symlink(out + ".old"));
    // The recording and --json both want stdout.
    r = run({binary(), "--json", "record", "-o", "-", "--", "touch", ran});
    CHECK(r.exit_code == 2);
    gms::test::require_valid(r.out, "error");
    CHECK_FALSE(fs::exists(ran));
    k.check_intact();
}

TEST_CASE("record -o writes a stream to a pipe, stdout, a character device and a FIFO", "[outputs][live]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    gms::test::ScratchDir scratch;
    Kinds k(scratch.path);
    const std::string gms = shell_quote(binary()), d = scratch.path;
    const std::string workload = " -- " + gms + " stress rebind pages=8 punch_pages=2";
    // Through a pipe, as `perf record -o - | ...`: the command's stdout
    // goes to stderr, so nothing but the recording is in the pipe.
    for (const std::string out : {"-", "/dev/stdout"}) {
        std::string piped = d + "/piped.rec";
        sh(gms + " record -o " + out + workload + " | cat > " + piped);
        CHECK(whole_recording(piped) > 10);
        auto r = run({binary(), "--json", "report", "-i", piped});
        INFO(out << ": " << r.err);
        CHECK(r.exit_code == 0);
        gms::test::require_valid(r.out, "summary");
        fs::remove(piped);
    }
    sh("cat " + shell_quote(k.fifo) + " > " + d + "/from-fifo & " + gms + " record -o " + shell_quote(k.fifo) +
       workload + " > /dev/null; wait");
    CHECK(whole_recording(d + "/from-fifo") > 10);
    for (const auto& out : {k.chardev, k.chardev_link}) {
        for (const char* force : {"", "-f"}) {
            auto r = run({"sh", "-c", gms + " record " + force + " -o " + shell_quote(out) + " -d 0.3"});
            INFO(out << " " << force << ": " << r.err);
            CHECK(r.exit_code == 0);
        }
    }
    // A regular file: kept as FILE.old, and an earlier FILE.old that is
    // replaced is named.
    std::string out = d + "/x.rec";
    std::ofstream(out) << "the last recording";
    std::ofstream(out + ".old") << "the one before";
    auto r = run({binary(), "record", "-o", out, "-d", "0.3"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.err, Catch::Contains("the existing " + out + " was kept as " + out + ".old (the earlier " + out +
                                      ".old was replaced)"));
    CHECK(slurp(out + ".old") == "the last recording");
    CHECK(whole_recording(out) > 0);
    k.check_intact();
    CHECK(names_in(d) == std::set<std::string>{"null", "null-link", "fifo", "precious", "link-to-precious",
                                               "dangling", "subdir", "ro", "from-fifo", "x.rec", "x.rec.old"});
}

TEST_CASE("daemon --textfile writes a stream or replaces a regular file and refuses the rest at start",
          "[outputs][daemon]")
{
    GMS_REQUIRE_ROOT();
    gms::test::ScratchDir scratch;
    Kinds k(scratch.path);
    for (const auto& [out, why] : k.refused()) {
        auto r = run({"timeout", "60", binary(), "-v", "daemon", "--listen", "none", "--textfile", out, "-d", "1"});
        INFO(out << ": " << r.err);
        CHECK(r.exit_code == 1);
        CHECK_THAT(r.err, Catch::StartsWith("error: --textfile: cannot write " + out) && Catch::Contains(why));
        CHECK_THAT(r.err, !Catch::Contains("libbpf"));
    }
    k.check_intact();
    GMS_SKIP_IF(gms::test::why_no_live());
    std::string prom = scratch.path + "/gmemscope.prom";
    std::ofstream(prom) << "stale";
    for (const auto& out : {prom, k.chardev, k.chardev_link}) {
        auto r = run({"timeout", "60", binary(), "daemon", "--listen", "none", "--textfile", out, "--interval",
                      "0.2", "-d", "1"});
        INFO(out << ": " << r.err);
        CHECK(r.exit_code == 0);
    }
    CHECK_THAT(slurp(prom), Catch::Contains("gmemscope_build_info"));
    k.check_intact();
    CHECK(names_in(scratch.path) == std::set<std::string>{"null", "null-link", "fifo", "precious",
                                                          "link-to-precious", "dangling", "subdir", "ro",
                                                          "gmemscope.prom"});
}
