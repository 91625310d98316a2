// gmemscope daemon on the real kernel: real workloads run while it
// traces; /metrics and the textfile are parsed by a real OpenMetrics
// parser (prometheus_client's, tests/parse_openmetrics.py).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
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
std::string http_get(uint16_t port, const std::string& path)
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
        std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
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

// sample name{labels} -> value, as prometheus_client parsed it; REQUIREs it parses.
std::map<std::string, double> parse_metrics(const std::string& text)
{
    gms::test::ScratchDir dir;
    std::string file = dir.path + "/metrics.txt";
    std::ofstream(file) << text;
    auto r = run({"/usr/bin/python3", source_dir() + "/tests/parse_openmetrics.py", file});
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

TEST_CASE("daemon: /metrics and the textfile parse as OpenMetrics and count real workloads across SIGHUP and SIGTERM",
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
        response = http_get(port, "/metrics");
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
        later = parse_metrics(body_of(http_get(port, "/metrics")));
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
    CHECK(text.str().ends_with("# EOF\n"));
    auto last = parse_metrics(text.str());
    CHECK(last["gmemscope_punch_holes_total{}"] >= m["gmemscope_punch_holes_total{}"]);
    // The file was renamed into place: no temporary is left beside it.
    for (const auto& e : std::filesystem::directory_iterator(dir.path))
        CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}
