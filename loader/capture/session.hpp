// Runs a tracing session: a command started under the tracer (held
// until the programs are attached), SIGINT/SIGTERM through a signalfd,
// a duration, and the pump from the ring buffer into a sink.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "loader/capture/tracer.hpp"

namespace gms {

// Blocks SIGINT and SIGTERM from now on: a session started later reads
// them from a signalfd, so a signal during probing and loading still ends
// it cleanly (the recording is finished) instead of killing the process.
void block_stop_signals();

// A command forked now and held before exec until release().  With
// stdout_to_stderr its stdout is this process's stderr: a JSON stream on
// our stdout must hold only JSON.
class Child {
public:
    explicit Child(const std::vector<std::string>& argv, bool stdout_to_stderr = false);
    ~Child();
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }
    void release();
    // Reaps the child if it exited; its exit status, or -1 if running.
    int poll_exit();
    int pidfd() const { return pidfd_; }

private:
    std::string name_;
    pid_t pid_ = -1;
    int pidfd_ = -1;
    int go_fd_ = -1;
    int exec_err_fd_ = -1;   // the child's errno if exec fails; EOF once it succeeds
    int status_ = -1;
};

// Signals read from a signalfd (blocked while it lives), so that a loop
// ends or reloads cleanly with no global flag.
class SignalFd {
public:
    explicit SignalFd(std::initializer_list<int> signals);
    ~SignalFd();
    SignalFd(const SignalFd&) = delete;
    SignalFd& operator=(const SignalFd&) = delete;
    int fd() const { return fd_; }
    // The next pending signal, 0 if none.
    int take();

private:
    sigset_t mask_{}, old_{};
    int fd_ = -1;
};

struct SessionOptions {
    double duration_s = 0;          // 0: until the command ends or a signal
    int poll_ms = 100;              // consumer timer; wakeups are batched
    double counters_every_s = 1.0;  // how often on_counters is called
    // Called after each batch of records taken from the ring buffer (each
    // poll's wakeup, and the last batch): where a sink's buffered output is flushed.
    std::function<void()> after_batch;
};

struct SessionEnd {
    int signal = 0;            // SIGINT/SIGTERM that ended it, or 0
    int command_status = -1;   // wait status of the command, -1 if none
    gms_drops_record counters{};
};

SessionEnd run_session(Tracer& tracer, Child* child, const SessionOptions& opts, const Tracer::Sink& sink,
                       const std::function<void(const gms_drops_record&)>& on_counters);

}  // namespace gms
