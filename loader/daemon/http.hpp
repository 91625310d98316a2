// A tiny single-threaded HTTP/1.0 server for the daemon's /metrics: the
// caller polls its fds with the rest of its loop, then calls serve().
// Requests are bounded (8 KiB head, 16 clients, 5 s), one per connection.
#pragma once

#include <poll.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace gms {

class MetricsServer {
public:
    // "ADDR:PORT" (IPv4; port 0 picks one); throws std::runtime_error.
    explicit MetricsServer(const std::string& listen);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    std::string address() const { return address_; }   // as bound: "127.0.0.1:9477"
    // The fds to poll for reading: the listener and the clients.
    void add_pollfds(std::vector<pollfd>& fds) const;
    // Accepts, reads and answers what is ready; body() renders /metrics.
    void serve(const std::function<std::string()>& body);

private:
    struct Client {
        int fd;
        std::string head;
        std::chrono::steady_clock::time_point since;
    };
    void answer(Client& c, const std::function<std::string()>& body);

    int listen_fd_ = -1;
    std::string address_;
    std::vector<Client> clients_;
};

}  // namespace gms
