// The VM lane's own checks (tests/vm/init.sh runs them on purpose; hidden
// from a plain run by the `[.]` tag): between two test cases, nothing of
// gmemscope may stay attached, pinned or running, and a test that fails in
// the middle of a persisted enforcement is the one blamed for it. And on
// every lane: what a test started ends with the test process.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

#include "helpers.hpp"
#include "loader/enforce/enforce.hpp"

namespace {

// Only inside the lane's guest is every gmemscope process and link the
// suite's own; on a shared host they may be someone else's.
std::string why_not_in_lane()
{
    const char* row = getenv("GMS_KERNEL_ROW");
    if (!row || !*row)
        return "the VM lane's check between tests (tests/vm/init.sh): elsewhere gmemscope's processes and links "
               "may not be this suite's";
    return gms::test::why_no_root();
}

}  // namespace

TEST_CASE("lane: nothing of gmemscope is left attached, pinned or running", "[.][lane-check]")
{
    GMS_SKIP_IF(why_not_in_lane());
    // What goes by itself (a link whose holder just exited, which the
    // kernel may free a moment later) is not left behind.
    auto found = gms::test::find_leftovers();
    if (found.empty() || gms::test::wait_until([] { return gms::test::find_leftovers().empty(); },
                                               std::chrono::seconds(2)))
        return;
    found = gms::test::find_leftovers();
    auto remaining = gms::test::remove_leftovers();
    // One line each, for init.sh to show against the test that left them.
    for (const auto& f : found)
        printf("LEFTOVER %s\n", f.c_str());
    for (const auto& r : remaining)
        printf("NOT REMOVED %s\n", r.c_str());
    fflush(stdout);
    CHECK(remaining.empty());
    FAIL(found.size() << " thing(s) of gmemscope left behind (removed: " << found.size() - remaining.size() << ")");
}

TEST_CASE("lane: a test that fails on purpose in the middle of a persisted enforcement", "[.][lane-leak]")
{
    GMS_SKIP_IF(gms::test::why_no_lsm_after(why_not_in_lane()));
    // Started as the SIGKILL test once started it, a bare fork nothing
    // reaps: the failure below leaves the loader running and its
    // enforcement pinned, for the lane's check to find.
    pid_t loader = fork();
    if (loader == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(gms::test::binary().c_str(), "gmemscope", "enforce", "--persist", nullptr);
        _exit(127);
    }
    const std::string link = std::string(gms::kEnforceDir) + "/link_lsm_file_ioctl";
    REQUIRE(gms::test::wait_until([&] { return access(link.c_str(), F_OK) == 0; }, std::chrono::seconds(120)));
    FAIL("on purpose, with `enforce --persist` (pid " << loader << ") running and " << link << " pinned");
}

TEST_CASE("a test process killed by SIGKILL takes the commands it started with it", "[helpers]")
{
    // A stand-in for unit_tests at CTest's timeout: it starts a command
    // as every test does (Background), says its pid, and is killed.
    int p[2];
    REQUIRE(pipe(p) == 0);
    pid_t test = fork();
    if (test == 0) {
        gms::test::Background cmd({"sleep", "600"});
        pid_t pid = cmd.pid();
        ssize_t n = write(p[1], &pid, sizeof(pid));
        (void)n;
        pause();
        _exit(0);
    }
    close(p[1]);
    pid_t cmd = 0;
    REQUIRE(read(p[0], &cmd, sizeof(cmd)) == sizeof(cmd));
    close(p[0]);
    REQUIRE(cmd > 0);
    CHECK(kill(cmd, 0) == 0);
    kill(test, SIGKILL);
    REQUIRE(waitpid(test, nullptr, 0) == test);
    // Gone, or dead and waiting for init to reap it (state Z).
    auto dead = [cmd] {
        std::ifstream stat("/proc/" + std::to_string(cmd) + "/stat");
        std::string line;
        if (!std::getline(stat, line))
            return true;
        auto paren = line.rfind(')');
        return paren != std::string::npos && line.compare(paren + 1, 3, " Z ") == 0;
    };
    CHECK(gms::test::wait_until(dead, std::chrono::seconds(10)));
}
