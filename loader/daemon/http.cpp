#include "loader/daemon/http.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "loader/daemon/metrics.hpp"

namespace gms {
namespace {

constexpr size_t kMaxHead = 8192;
constexpr size_t kMaxClients = 16;
constexpr auto kClientTimeout = std::chrono::seconds(5);

[[noreturn]] void fail(const std::string& what)
{
    throw std::runtime_error(fmt::format("{}: {}", what, strerror(errno)));
}

void send_all(int fd, const std::string& data)
{
    size_t off = 0;
    while (off < data.size()) {
        ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n <= 0)
            return;   // the client went away or stalled past SO_SNDTIMEO
        off += size_t(n);
    }
}

std::string response(const char* status, const char* type, const std::string& body, bool head_only)
{
    return fmt::format("HTTP/1.0 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                       status, type, body.size(), head_only ? "" : body);
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
    if (::listen(listen_fd_, 16) != 0)
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
        fds.push_back({c.fd, POLLIN, 0});
}

void MetricsServer::answer(Client& c, const std::function<std::string()>& body)
{
    std::string line = c.head.substr(0, c.head.find_first_of("\r\n"));
    bool get = line.starts_with("GET "), head = line.starts_with("HEAD ");
    std::string path = line.substr(line.find(' ') + 1);
    path = path.substr(0, path.find_first_of(" ?"));
    // A client that does not read must not stall the daemon for long.
    timeval tv{1, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) & ~O_NONBLOCK);
    if (!get && !head)
        send_all(c.fd, response("405 Method Not Allowed", "text/plain", "GET /metrics\n", false));
    else if (path != "/metrics")
        send_all(c.fd, response("404 Not Found", "text/plain", "gmemscope serves /metrics\n", head));
    else
        send_all(c.fd, response("200 OK", kOpenMetricsType, body(), head));
}

void MetricsServer::serve(const std::function<std::string()>& body)
{
    for (;;) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        if (clients_.size() >= kMaxClients) {
            close(fd);
            continue;
        }
        clients_.push_back({fd, {}, std::chrono::steady_clock::now()});
    }
    auto now = std::chrono::steady_clock::now();
    std::erase_if(clients_, [&](Client& c) {
        char buf[2048];
        ssize_t n;
        while ((n = recv(c.fd, buf, sizeof(buf), 0)) > 0 && c.head.size() < kMaxHead)
            c.head.append(buf, size_t(n));
        bool complete = c.head.find("\r\n\r\n") != std::string::npos || c.head.find("\n\n") != std::string::npos;
        bool gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        if (complete)
            answer(c, body);
        else if (!gone && c.head.size() < kMaxHead && now - c.since < kClientTimeout)
            return false;
        close(c.fd);
        return true;
    });
}

}  // namespace gms
