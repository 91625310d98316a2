#include "loader/daemon/http.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "loader/daemon/metrics.hpp"

namespace gms {
namespace {

constexpr size_t kMaxHead = 8192;
constexpr size_t kMaxClients = 64;
constexpr size_t kAcceptsPerServe = kMaxClients / 2;   // a newcomer is read before it can be the oldest
constexpr auto kClientTime = std::chrono::seconds(3);

[[noreturn]] void fail(const std::string& what)
{
    throw std::runtime_error(fmt::format("{}: {}", what, strerror(errno)));
}

std::string response(const char* status, const char* type, const std::string& body, bool head_only)
{
    return fmt::format("HTTP/1.0 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                       status, type, body.size(), head_only ? "" : body);
}

// "METHOD SP TARGET SP HTTP/d.d" (RFC 9112 3): method a token, target
// from "/", no spaces or controls anywhere.
bool request_line_ok(const std::string& line, std::string& method, std::string& target)
{
    auto sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp1 == 0 || sp2 == sp1)
        return false;
    method = line.substr(0, sp1);
    target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string version = line.substr(sp2 + 1);
    for (char c : line)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
            return false;
    bool token = std::all_of(method.begin(), method.end(), [](char c) { return isupper(static_cast<unsigned char>(c)); });
    return token && target.starts_with("/") && target.find(' ') == std::string::npos && version.size() == 8 &&
           version.starts_with("HTTP/") && isdigit(static_cast<unsigned char>(version[5])) && version[6] == '.' &&
           isdigit(static_cast<unsigned char>(version[7]));
}

bool accepts_openmetrics(const std::string& head)
{
    std::string lower(head);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) { return char(tolower(c)); });
    auto at = lower.find("\naccept:");
    return at != std::string::npos &&
           lower.substr(at, lower.find('\n', at + 1) - at).find("application/openmetrics-text") != std::string::npos;
}

}  // namespace

MetricsServer::MetricsServer(const std::string& listen)
{
    auto colon = listen.rfind(':');
    if (colon == std::string::npos)
        throw std::runtime_error(fmt::format("--listen {}: expected ADDR:PORT", listen));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    std::string host = listen.substr(0, colon);
    unsigned long port = 0;
    try {
        size_t used = 0;
        port = std::stoul(listen.substr(colon + 1), &used);
        if (used != listen.size() - colon - 1 || port > 65535)
            throw std::invalid_argument("port");
    } catch (const std::exception&) {
        throw std::runtime_error(fmt::format("--listen {}: bad port", listen));
    }
    sa.sin_port = htons(uint16_t(port));
    if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1)
        throw std::runtime_error(fmt::format("--listen {}: {} is not an IPv4 address", listen, host));
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0)
        fail("socket");
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
        int e = errno;
        close(listen_fd_);
        errno = e;
        fail(fmt::format("binding {}", listen));
    }
    if (::listen(listen_fd_, SOMAXCONN) != 0)
        fail("listen");
    socklen_t len = sizeof(sa);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    address_ = fmt::format("{}:{}", host, ntohs(sa.sin_port));
}

MetricsServer::~MetricsServer()
{
    for (auto& c : clients_)
        close(c.fd);
    if (listen_fd_ >= 0)
        close(listen_fd_);
}

void MetricsServer::add_pollfds(std::vector<pollfd>& fds) const
{
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const auto& c : clients_)
        fds.push_back({c.fd, short(c.state == State::writing ? POLLOUT : POLLIN), 0});
}

void MetricsServer::accept_new()
{
    for (size_t n = 0; n < kAcceptsPerServe; n++) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (clients_.size() >= kMaxClients) {
            // Room for the newcomer: the oldest that has not asked yet, or
            // failing that the oldest of all.
            auto victim = std::find_if(clients_.begin(), clients_.end(),
                                       [](const Client& c) { return c.state == State::reading; });
            if (victim == clients_.end())
                victim = clients_.begin();
            close(victim->fd);
            clients_.erase(victim);
        }
        clients_.push_back({fd, State::reading, {}, {}, 0, std::chrono::steady_clock::now()});
    }
}

void MetricsServer::answer(Client& c, const std::function<std::string(bool)>& body)
{
    std::string line = c.in.substr(0, c.in.find_first_of("\r\n")), method, target;
    if (!request_line_ok(line, method, target)) {
        c.out = response("400 Bad Request", "text/plain", "a request line is METHOD /PATH HTTP/1.x\n", false);
    } else if (method != "GET" && method != "HEAD") {
        c.out = response("405 Method Not Allowed", "text/plain", "GET /metrics\n", false);
    } else {
        bool head = method == "HEAD";
        std::string path = target.substr(0, target.find('?'));
        if (path != "/metrics") {
            c.out = response("404 Not Found", "text/plain", "gmemscope serves /metrics\n", head);
        } else {
            bool om = accepts_openmetrics(c.in);
            c.out = response("200 OK", om ? kOpenMetricsType : kPrometheusTextType, body(om), head);
        }
    }
    c.state = State::writing;
}

bool MetricsServer::step(Client& c, const std::function<std::string(bool)>& body)
{
    char buf[4096];
    if (c.state == State::reading) {
        ssize_t n = -1;
        errno = EAGAIN;
        while (c.in.size() <= kMaxHead && (n = recv(c.fd, buf, sizeof(buf), 0)) > 0)
            c.in.append(buf, size_t(n));
        bool complete = c.in.find("\r\n\r\n") != std::string::npos || c.in.find("\n\n") != std::string::npos;
        if (complete) {
            answer(c, body);
        } else if (c.in.size() > kMaxHead) {
            c.out = response("431 Request Header Fields Too Large", "text/plain",
                             fmt::format("gmemscope reads request heads of up to {} bytes\n", kMaxHead), false);
            c.state = State::writing;
        } else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            return true;   // gone before asking
        } else {
            return false;
        }
    }
    if (c.state == State::writing) {
        while (c.sent < c.out.size()) {
            ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return false;
            if (n <= 0)
                return true;
            c.sent += size_t(n);
        }
        // Closing with unread input would reset the connection, and the
        // client could lose the answer (a 431 to a huge head): stop
        // writing, and read to its end (within the client's time).
        shutdown(c.fd, SHUT_WR);
        c.state = State::draining;
    }
    ssize_t n;
    for (int i = 0; i < 64 && (n = recv(c.fd, buf, sizeof(buf), 0)) > 0; i++) {
    }
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

void MetricsServer::serve(const std::function<std::string(bool)>& body)
{
    accept_new();
    auto now = std::chrono::steady_clock::now();
    std::erase_if(clients_, [&](Client& c) {
        bool done = step(c, body) || now - c.since >= kClientTime;
        if (done)
            close(c.fd);
        return done;
    });
}

}  // namespace gms
