// A tiny single-threaded HTTP/1.0 server for the daemon's /metrics: the
// caller polls its fds with the rest of its loop, then calls serve().
// Every socket is non-blocking and every client bounded (8 KiB head,
// 3 s from accept to close), so no client stalls the daemon's loop.
// Under a flood of connections the oldest client that has not sent a
// whole request is closed to make room: an idle connection holds a slot
// only until newer ones need it, and a scraper, which sends its request
// at once, is answered.
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
    // The fds to poll: the listener and the clients, each for what it waits on.
    void add_pollfds(std::vector<pollfd>& fds) const;
    // Accepts, reads and answers what is ready.  body(openmetrics)
    // renders /metrics: OpenMetrics when the client's Accept asks for it
    // (Prometheus does), else the Prometheus text format.
    void serve(const std::function<std::string(bool openmetrics)>& body);
    size_t clients() const { return clients_.size(); }

private:
    enum class State { reading, writing, draining };
    struct Client {
        int fd;
        State state = State::reading;
        std::string in, out;
        size_t sent = 0;
        std::chrono::steady_clock::time_point since;
    };
    void accept_new();
    void answer(Client& c, const std::function<std::string(bool)>& body);
    // Whether c is done with (to be closed).
    bool step(Client& c, const std::function<std::string(bool)>& body);

    int listen_fd_ = -1;
    std::string address_;
    std::vector<Client> clients_;
};

}  // namespace gms
