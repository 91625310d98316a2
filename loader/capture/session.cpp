#include "loader/capture/session.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

namespace gms {

void block_stop_signals()
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
}

Child::Child(const std::vector<std::string>& argv, bool stdout_to_stderr)
{
    if (argv.empty())
        throw std::invalid_argument("no command to run");
    name_ = argv[0];
    int go[2], err[2];
    if (pipe2(go, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
        throw std::runtime_error(fmt::format("pipe: {}", strerror(errno)));
    pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0)
        throw std::runtime_error(fmt::format("fork: {}", strerror(errno)));
    if (pid_ == 0) {
        // The command dies with its tracer, even by SIGKILL: it must not
        // run on untraced (and unrecorded) as an orphan.
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        close(go[1]);
        close(err[0]);
        // The command gets the signal mask a shell would give it.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        char c;
        // Held until the tracer is attached; EOF without a byte: give up.
        if (read(go[0], &c, 1) != 1)
            _exit(127);
        if (stdout_to_stderr && dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
            _exit(126);
        std::vector<char*> args;
        for (const auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        execvp(args[0], args.data());
        int e = errno;
        if (write(err[1], &e, sizeof(e)) != sizeof(e))
            _exit(126);
        _exit(127);
    }
    close(go[0]);
    close(err[1]);
    go_fd_ = go[1];
    exec_err_fd_ = err[0];
    pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
}

Child::~Child()
{
    if (go_fd_ >= 0)
        close(go_fd_);
    if (exec_err_fd_ >= 0)
        close(exec_err_fd_);
    if (status_ < 0 && pid_ > 0) {
        kill(pid_, SIGTERM);
        waitpid(pid_, nullptr, 0);
    }
    if (pidfd_ >= 0)
        close(pidfd_);
}

void Child::release()
{
    char c = 1;
    if (write(go_fd_, &c, 1) != 1)
        throw std::runtime_error(fmt::format("starting the command: {}", strerror(errno)));
    close(go_fd_);
    go_fd_ = -1;
    int e = 0;
    ssize_t n = read(exec_err_fd_, &e, sizeof(e));
    close(exec_err_fd_);
    exec_err_fd_ = -1;
    if (n == sizeof(e))
        throw std::runtime_error(fmt::format("cannot run {}: {}", name_, strerror(e)));
}

int Child::poll_exit()
{
    if (status_ >= 0)
        return status_;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_)
        status_ = st;
    return status_;
}

SignalFd::SignalFd(std::initializer_list<int> signals)
{
    sigemptyset(&mask_);
    for (int s : signals)
        sigaddset(&mask_, s);
    sigprocmask(SIG_BLOCK, &mask_, &old_);
    fd_ = signalfd(-1, &mask_, SFD_CLOEXEC | SFD_NONBLOCK);
}

SignalFd::~SignalFd()
{
    close(fd_);
    sigprocmask(SIG_SETMASK, &old_, nullptr);
}

int SignalFd::take()
{
    struct signalfd_siginfo si {};
    return read(fd_, &si, sizeof(si)) == sizeof(si) ? static_cast<int>(si.ssi_signo) : 0;
}

SessionEnd run_session(Tracer& tracer, Child* child, const SessionOptions& opts, const Tracer::Sink& sink,
                       const std::function<void(const gms_drops_record&)>& on_counters)
{
    using clock = std::chrono::steady_clock;
    // SIGINT and SIGTERM end the loop cleanly (the recording is finished).
    SignalFd signals{SIGINT, SIGTERM};
    SessionEnd end;
    auto start = clock::now();
    auto next_counters = start + std::chrono::duration<double>(opts.counters_every_s);
    if (child)
        child->release();
    for (;;) {
        struct pollfd fds[3] = {{tracer.ready_fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0},
                                {child ? child->pidfd() : -1, POLLIN, 0}};
        int timeout = opts.poll_ms;
        if (opts.duration_s > 0) {
            std::chrono::duration<double> left = std::chrono::duration<double>(opts.duration_s) - (clock::now() - start);
            timeout = std::max(0, std::min(timeout, int(left.count() * 1000)));
        }
        poll(fds, 3, timeout);
        tracer.consume(sink);
        if (opts.after_batch)
            opts.after_batch();
        if (fds[1].revents & POLLIN)
            end.signal = signals.take();
        bool command_done = child && child->poll_exit() >= 0;
        bool time_up = opts.duration_s > 0 &&
                       clock::now() - start >= std::chrono::duration<double>(opts.duration_s);
        if (end.signal || command_done || time_up)
            break;
        if (clock::now() >= next_counters) {
            on_counters(tracer.counters());
            next_counters += std::chrono::duration<double>(opts.counters_every_s);
        }
    }
    // The command's last records are in the ring buffer already: take them.
    tracer.consume(sink);
    if (opts.after_batch)
        opts.after_batch();
    if (child)
        end.command_status = child->poll_exit();
    end.counters = tracer.counters();
    return end;
}

}  // namespace gms
