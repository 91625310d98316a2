// gmemscope daemon on the real kernel: real workloads run while it
// traces; /metrics and the textfile are parsed by real parsers
// (prometheus_client's, tests/parse_openmetrics.py) and checked by
// promtool; the HTTP endpoint holds under a connection flood.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <poll.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "helpers.hpp"

namespace {

using gms::test::Background;
using gms::test::binary;
using gms::test::run;
using gms::test::source_dir;

uint16_t free_port()
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
    socklen_t len = sizeof(sa);
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    close(fd);
    return ntohs(sa.sin_port);
}

// The whole HTTP/1.0 response to GET path, "" if nothing answers.
std::string http_get(uint16_t port, const std::string& path, const std::string& headers = "")
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string out;
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
        std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n" + headers + "\r\n";
        if (write(fd, req.data(), req.size()) == ssize_t(req.size())) {
            char buf[65536];
            ssize_t n;
            while ((n = read(fd, buf, sizeof(buf))) > 0)
                out.append(buf, size_t(n));
        }
    }
    close(fd);
    return out;
}

std::string body_of(const std::string& response)
{
    auto at = response.find("\r\n\r\n");
    return at == std::string::npos ? "" : response.substr(at + 4);
}

constexpr const char* kAcceptOpenMetrics = "Accept: application/openmetrics-text; version=1.0.0\r\n";

// sample name{labels} -> value, as prometheus_client parsed it (OpenMetrics,
// or the Prometheus text format); REQUIREs it parses.
std::map<std::string, double> parse_metrics(const std::string& text, bool prometheus = false)
{
    gms::test::ScratchDir dir;
    std::string file = dir.path + "/metrics.txt";
    std::ofstream(file) << text;
    std::vector<std::string> argv = {"/usr/bin/python3", source_dir() + "/tests/parse_openmetrics.py"};
    if (prometheus)
        argv.push_back("--prometheus");
    argv.push_back(file);
    auto r = run(argv);
    INFO("parser: " << r.err << "\ntext:\n" << text.substr(0, 3000));
    REQUIRE(r.exit_code == 0);
    std::map<std::string, double> out;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
        std::vector<std::string> f;
        std::istringstream cols(line);
        for (std::string c; std::getline(cols, c, '\t');)
            f.push_back(c);
        REQUIRE(f.size() == 5);
        out[f[2] + "{" + f[3] + "}"] = std::stod(f[4]);
    }
    return out;
}

// The sum of samples whose key starts with prefix and holds `part`.
double sum_of(const std::map<std::string, double>& m, const std::string& prefix, const std::string& part = "")
{
    double s = 0;
    for (const auto& [k, v] : m)
        if (k.starts_with(prefix) && k.find(part) != std::string::npos)
            s += v;
    return s;
}

gms::test::Why why_no_parser()
{
    auto r = run({"/usr/bin/python3", "-c", "import prometheus_client.openmetrics.parser"});
    return gms::test::needed(r.exit_code == 0 ? "" : "no python3-prometheus-client (apt-get install python3-prometheus-client)");
}

void write_config(const std::string& path, const std::string& textfile, uint16_t port)
{
    std::ofstream(path) << "# gmemscope daemon test\ntextfile = " << textfile
                        << "\ninterval = 0.2\naudit_interval = 1\nlisten = 127.0.0.1:" << port << "\n";
}

}  // namespace

TEST_CASE("daemon: /metrics and the textfile parse and count real workloads across SIGHUP and SIGTERM",
          "[live][daemon]")
{
    GMS_REQUIRE_LIVE();
    GMS_SKIP_IF(why_no_parser());
    gms::test::ScratchDir dir;
    uint16_t port = free_port();
    std::string conf = dir.path + "/daemon.conf", first = dir.path + "/first.prom", second = dir.path + "/second.prom";
    write_config(conf, first, port);
    Background daemon({binary(), "daemon", "--config", conf});
    INFO("daemon stderr: " << daemon.err());
    REQUIRE(daemon.wait_for_stderr("first audit", std::chrono::seconds(60)));

    Background held({binary(), "stress", "--steps", "fault", "pages=3", "hold_ms=60000"});
    REQUIRE(held.wait_for_stderr(": holding for", std::chrono::seconds(30)));
    REQUIRE(run({binary(), "stress", "convert", "pages=4"}).exit_code == 0);
    REQUIRE(run({binary(), "stress", "punch-storm", "range_pages=16", "count=500"}).exit_code == 0);

    // Punches are counted in the kernel; the audit runs every second.
    std::string response;
    std::map<std::string, double> m;
    for (int i = 0; i < 50; i++) {
        response = http_get(port, "/metrics", kAcceptOpenMetrics);
        m = parse_metrics(body_of(response));
        if (m["gmemscope_punch_holes_total{}"] >= 500 && m["gmemscope_audit_resident_pages{}"] >= 3)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    CHECK(response.starts_with("HTTP/1.0 200 OK\r\n"));
    CHECK(response.find("\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n") !=
          std::string::npos);
    CHECK(body_of(response).ends_with("# EOF\n"));

    // Other processes may run workloads too: at least what ours did.
    CHECK(m["gmemscope_punch_holes_total{}"] >= 500);
    CHECK(m["gmemscope_pagecache_removals_total{}"] >= 500);
    CHECK(m["gmemscope_punch_errors_total{}"] == 0);
    CHECK(sum_of(m, "gmemscope_conversions_total{") >= 6);
    for (std::string op : {"KVM_SET_MEMORY_ATTRIBUTES", "KVM_SET_MEMORY_ATTRIBUTES2", "KVM_GMEM_CONVERT_PRIVATE",
                           "KVM_GMEM_CONVERT_SHARED"})
        CHECK(sum_of(m, "gmemscope_conversions_total{", "op=" + op + ",") >= 1);
    CHECK(m["gmemscope_vetoes_total{mode=enforce}"] == 0);   // no enforcement running
    CHECK(m["gmemscope_vms_seen_total{}"] >= 3);
    CHECK(m.contains("gmemscope_dropped_events_total{cause=ringbuf_full}"));
    CHECK(m.contains("gmemscope_zaps_total{kind=zap_page}"));
    CHECK(m["gmemscope_audit_iterator{}"] == 1);
    CHECK(m["gmemscope_audit_vms{}"] >= 1);
    CHECK(m["gmemscope_audit_gmem_files{}"] >= 1);
    CHECK(m["gmemscope_audit_resident_pages{}"] >= 3);
    CHECK(m["gmemscope_audits_total{}"] >= 1);

    // The storm's process has exited: at the next audits its in-kernel
    // aggregates are deleted and their counts kept by the daemon.
    double audits = m["gmemscope_audits_total{}"];
    std::map<std::string, double> later;
    for (int i = 0; i < 50 && later["gmemscope_audits_total{}"] < audits + 2; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        later = parse_metrics(body_of(http_get(port, "/metrics")), true);
    }
    CHECK(later["gmemscope_audits_total{}"] >= audits + 2);
    for (const char* c : {"gmemscope_punch_holes_total{}", "gmemscope_pagecache_removals_total{}",
                          "gmemscope_faults_total{}", "gmemscope_punched_bytes_total{}"})
        CHECK(later[c] >= m[c]);

    CHECK(http_get(port, "/").starts_with("HTTP/1.0 404 "));
    REQUIRE(std::filesystem::exists(first));

    // SIGHUP: the config file is read again (a new textfile) and the audit re-run.
    write_config(conf, second, port);
    kill(daemon.pid(), SIGHUP);
    CHECK(daemon.wait_for_stderr("SIGHUP: re-read " + conf + "; audit re-run", std::chrono::seconds(10)));
    for (int i = 0; i < 50 && !std::filesystem::exists(second); i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    REQUIRE(std::filesystem::exists(second));

    auto end = daemon.stop(SIGTERM);
    CHECK(end.exit_code == 0);
    CHECK(end.err.find("daemon: Terminated; last metrics written to " + second) != std::string::npos);
    std::ifstream in(second);
    std::stringstream text;
    text << in.rdbuf();
    // node_exporter's textfile collector reads the Prometheus text format.
    CHECK_FALSE(text.str().ends_with("# EOF\n"));
    auto last = parse_metrics(text.str(), true);
    CHECK(last["gmemscope_punch_holes_total{}"] >= m["gmemscope_punch_holes_total{}"]);
    // The file was renamed into place: no temporary is left beside it.
    for (const auto& e : std::filesystem::directory_iterator(dir.path))
        CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}

namespace {

// A connection to 127.0.0.1:port that sends nothing (connect may still be pending).
int idle_connection(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    return fd;
}

// Sends `request` (whole, blocking) and returns the whole response.
std::string http_raw(uint16_t port, const std::string& request)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string out;
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
        for (size_t off = 0; off < request.size();) {
            ssize_t n = send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            off += size_t(n);
        }
        char buf[65536];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0)
            out.append(buf, size_t(n));
    }
    close(fd);
    return out;
}

std::string why_no_promtool()
{
    return run({"sh", "-c", "command -v promtool"}).exit_code == 0
               ? ""
               : "no promtool (Debian's prometheus package: apt-get install prometheus)";
}

// promtool check metrics on `text`: "" when it passes, else what it said.
std::string promtool_check(const std::string& text)
{
    gms::test::ScratchDir dir;
    std::string file = dir.path + "/m.prom";
    std::ofstream(file) << text;
    auto r = run({"sh", "-c", "promtool check metrics < " + gms::test::shell_quote(file) + " 2>&1"});
    return r.exit_code == 0 && r.out.empty() ? "" : "exit " + std::to_string(r.exit_code) + ": " + r.out;
}

}  // namespace

TEST_CASE("daemon: scrapes succeed while 500 idle connections are open and reopened", "[live][daemon]")
{
    GMS_REQUIRE_LIVE();
    // Its bounds are wall-clock times of the host; the VM lane runs under emulation.
    GMS_SKIP_IF(getenv("GMS_KERNEL_ROW") ? "the HTTP endpoint's timing is measured on the host lane, not under the "
                                           "VM lane's emulation" : "");
    uint16_t port = free_port();
    Background daemon({binary(), "daemon", "--listen", "127.0.0.1:" + std::to_string(port)});
    INFO("daemon stderr: " << daemon.err());
    REQUIRE(daemon.wait_for_stderr("first audit", std::chrono::seconds(60)));

    // The flood: 500 connections that never send a byte; each one the
    // daemon closes is opened again at once.
    std::atomic<bool> done{false};
    std::atomic<int> reopened{0};
    std::thread flood([&] {
        std::vector<int> fds;
        for (int i = 0; i < 500; i++)
            fds.push_back(idle_connection(port));
        while (!done) {
            std::vector<pollfd> p;
            for (int fd : fds)
                p.push_back({fd, POLLIN, 0});
            poll(p.data(), p.size(), 20);
            for (size_t i = 0; i < p.size(); i++)
                if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                    close(fds[i]);
                    fds[i] = idle_connection(port);
                    reopened++;
                }
        }
        for (int fd : fds)
            close(fd);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    int ok = 0, tries = 20;
    for (int i = 0; i < tries; i++) {
        auto t0 = std::chrono::steady_clock::now();
        std::string r = http_get(port, "/metrics");
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        INFO("scrape " << i << " took " << s << " s: " << r.substr(0, 40));
        ok += r.starts_with("HTTP/1.0 200 OK\r\n") && s < 2;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    done = true;
    flood.join();
    INFO("connections reopened by the flood: " << reopened);
    CHECK(ok == tries);
    CHECK(reopened > 0);
}

TEST_CASE("daemon: 431 for a huge request head, 400 for a bad request line, 405 for another method",
          "[live][daemon]")
{
    GMS_REQUIRE_LIVE();
    // Its bounds are wall-clock times of the host; the VM lane runs under emulation.
    GMS_SKIP_IF(getenv("GMS_KERNEL_ROW") ? "the HTTP endpoint's timing is measured on the host lane, not under the "
                                           "VM lane's emulation" : "");
    uint16_t port = free_port();
    Background daemon({binary(), "daemon", "--listen", "127.0.0.1:" + std::to_string(port)});
    REQUIRE(daemon.wait_for_stderr("first audit", std::chrono::seconds(60)));
    std::string huge = "GET /metrics HTTP/1.0\r\nX-Big: " + std::string(1 << 20, 'a') + "\r\n\r\n";
    CHECK_THAT(http_raw(port, huge), Catch::StartsWith("HTTP/1.0 431 "));
    for (std::string bad : {"BOGUS\r\n\r\n", "GET /metrics\r\n\r\n", "GET metrics HTTP/1.0\r\n\r\n",
                            "GET /metrics HTTP/1.0 extra\r\n\r\n", "\r\n\r\n"}) {
        INFO(bad);
        CHECK_THAT(http_raw(port, bad), Catch::StartsWith("HTTP/1.0 400 "));
    }
    CHECK_THAT(http_raw(port, "POST /metrics HTTP/1.0\r\n\r\n"), Catch::StartsWith("HTTP/1.0 405 "));
    CHECK_THAT(http_raw(port, "HEAD /metrics HTTP/1.0\r\n\r\n"), Catch::StartsWith("HTTP/1.0 200 "));
    // Still serving.
    CHECK_THAT(http_get(port, "/metrics"), Catch::StartsWith("HTTP/1.0 200 OK\r\n"));
}

TEST_CASE("daemon: promtool check metrics passes on /metrics and on the textfile", "[live][daemon]")
{
    GMS_REQUIRE_LIVE();
    GMS_SKIP_IF(why_no_promtool());
    gms::test::ScratchDir dir;
    uint16_t port = free_port();
    std::string textfile = dir.path + "/g.prom";
    Background daemon({binary(), "daemon", "--listen", "127.0.0.1:" + std::to_string(port), "--textfile", textfile,
                       "--interval", "0.2"});
    REQUIRE(daemon.wait_for_stderr("first audit", std::chrono::seconds(60)));
    REQUIRE(run({binary(), "stress", "convert", "pages=2"}).exit_code == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::string response = http_get(port, "/metrics");
    CHECK(response.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != std::string::npos);
    CHECK(promtool_check(body_of(response)) == "");
    std::ifstream in(textfile);
    std::stringstream text;
    text << in.rdbuf();
    REQUIRE_FALSE(text.str().empty());
    CHECK(promtool_check(text.str()) == "");
    // Every sample has its HELP and TYPE, under the name it is sampled as.
    std::istringstream lines(text.str());
    std::set<std::string> helped, typed;
    for (std::string line; std::getline(lines, line);) {
        if (line.starts_with("# HELP "))
            helped.insert(line.substr(7, line.find(' ', 7) - 7));
        else if (line.starts_with("# TYPE "))
            typed.insert(line.substr(7, line.find(' ', 7) - 7));
        else if (!line.empty()) {
            std::string name = line.substr(0, line.find_first_of("{ "));
            CHECK(helped.contains(name));
            CHECK(typed.contains(name));
        }
    }
    // Prometheus asks for OpenMetrics and gets it.
    CHECK_THAT(body_of(http_get(port, "/metrics", kAcceptOpenMetrics)), Catch::EndsWith("# EOF\n"));
}

TEST_CASE("daemon: a textfile in a missing directory is an error at start", "[live][daemon]")
{
    GMS_REQUIRE_LIVE();
    auto r = run({"timeout", "60", binary(), "daemon", "--listen", "none", "--textfile", "/nonexistent/dir/x.prom",
                  "-d", "2"});
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("cannot write /nonexistent/dir/x.prom"));
    CHECK_THAT(r.err, !Catch::Contains("written to /nonexistent"));
}

TEST_CASE("the daemon's systemd unit is hardened (systemd-analyze security)", "[daemon]")
{
    GMS_SKIP_IF(run({"sh", "-c", "command -v systemd-analyze"}).exit_code == 0 ? "" : "no systemd-analyze");
    std::string unit = source_dir() + "/cli/gmemscope-daemon.service";
    // Exposure 4.7 before the hardening, 2.7 after; --threshold is tenths.
    auto r = run({"systemd-analyze", "security", "--offline=yes", "--threshold=30", unit});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    for (const char* key : {"PrivateDevices=", "ProtectKernelTunables=", "ProtectProc=", "UMask=", "PrivateMounts=",
                            "SystemCallFilter=~@mount", "SystemCallFilter=~@module", "SystemCallFilter=~@reboot",
                            "SystemCallFilter=~@raw-io", "SystemCallFilter=~@swap", "SystemCallFilter=~@clock"})
        CHECK_THAT(r.out, !Catch::Contains(std::string("✗ ") + key));
}
