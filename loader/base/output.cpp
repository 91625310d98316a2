#include "loader/base/output.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace gms {
namespace {

// Temporary files to remove when a signal whose default action ends the
// process arrives before their Output's destructor runs (an export is one
// long loop with no signal handling of its own).  A fixed table: the
// handler may only call async-signal-safe functions (unlink, raise).
constexpr int kTempSlots = 8;
char g_temp_paths[kTempSlots][PATH_MAX];
std::atomic<bool> g_temp_used[kTempSlots];

void remove_temps_and_die(int sig)
{
    for (int i = 0; i < kTempSlots; i++)
        if (g_temp_used[i].load())
            unlink(g_temp_paths[i]);
    // SA_RESETHAND restored the default action: the process ends by the
    // signal, as it would have without this handler.
    raise(sig);
}

// Only where the default action is in force: a command that handles
// these signals itself (record, daemon: a signalfd) or ignores them
// keeps doing so, and its destructors remove the files.
void install_handler_once()
{
    static bool installed = [] {
        for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
            struct sigaction old {};
            if (sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO))
                continue;
            struct sigaction sa {};
            sa.sa_handler = remove_temps_and_die;
            sa.sa_flags = SA_RESETHAND | SA_NODEFER;
            sigemptyset(&sa.sa_mask);
            sigaction(sig, &sa, nullptr);
        }
        return true;
    }();
    (void)installed;
}

int remember_temp(const std::string& path)
{
    for (int i = 0; i < kTempSlots; i++) {
        bool expected = false;
        if (path.size() < PATH_MAX && !g_temp_used[i].load()) {
            std::memcpy(g_temp_paths[i], path.c_str(), path.size() + 1);
            if (g_temp_used[i].compare_exchange_strong(expected, true))
                return i;
        }
    }
    return -1;   // more outputs than slots: only the destructor removes this one
}

void forget_temp(int slot)
{
    if (slot >= 0)
        g_temp_used[slot].store(false);
}

std::string kind_of(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISREG(m))
        return "a regular file";
    if (S_ISLNK(m))
        return "a symbolic link";
    return "not a regular file";
}

bool same_file(const struct stat& a, const struct stat& b)
{
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

Output::Output(std::string path, Existing existing) : path_(std::move(path)), existing_(existing)
{
    auto fail = [&](const std::string& why) { throw OutputError(fmt::format("cannot write {}: {}", path_, why)); };
    struct stat st {}, out {};
    bool stdout_open = fstat(STDOUT_FILENO, &out) == 0;
    int there = path_ == "-" ? -1 : lstat(path_.c_str(), &st);
    if (path_ == "-") {
        if (!stdout_open)
            fail("stdout is closed");
        is_stdout_ = true;
    } else if (there != 0 && errno != ENOENT) {
        fail(strerror(errno));
    } else if (there == 0) {
        // Something is there.  A symlink is followed only to a stream
        // (/dev/stdout -> /proc/self/fd/1 -> pipe:[...]); through one,
        // a regular file would be written behind the name the user gave.
        bool link = S_ISLNK(st.st_mode);
        struct stat target = st;
        if (link && stat(path_.c_str(), &target) != 0)
            fail(fmt::format("it is a symbolic link to {} ({})", errno == ENOENT ? "nothing" : "what cannot be read",
                             strerror(errno)));
        if (stdout_open && !S_ISREG(st.st_mode) && same_file(target, out))
            is_stdout_ = true;
        else if (S_ISCHR(target.st_mode) || S_ISFIFO(target.st_mode)) {
            fd_ = open(path_.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
            if (fd_ < 0)
                fail(strerror(errno));
        } else if (link)
            fail(fmt::format("it is a symbolic link to {}, which gmemscope neither follows nor replaces "
                             "(name the file itself)",
                             kind_of(target.st_mode)));
        else if (!S_ISREG(st.st_mode))
            fail(fmt::format("it is {}; gmemscope replaces only regular files and writes streams only to "
                             "character devices, FIFOs and pipes",
                             kind_of(st.st_mode)));
        else if (existing_ == Existing::keep_old)
            check_old(path_ + ".old");
    }
    if (is_stdout_) {
        fd_ = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        if (fd_ < 0)
            fail(strerror(errno));
        return;
    }
    if (fd_ >= 0)
        return;
    // A regular file: written beside its name first, so that a directory
    // that cannot be written to is found now, and a failed run leaves the
    // existing file as it was.
    auto slash = path_.rfind('/');
    std::string dir = slash == std::string::npos ? "" : path_.substr(0, slash + 1);
    std::string base = slash == std::string::npos ? path_ : path_.substr(slash + 1);
    std::string temp = dir + "." + base + ".XXXXXX";
    // A signal between creating the file and remembering it would leave
    // it behind: held back until the handler knows the name.
    install_handler_once();
    sigset_t stop, old;
    sigemptyset(&stop);
    for (int sig : {SIGINT, SIGTERM, SIGHUP})
        sigaddset(&stop, sig);
    pthread_sigmask(SIG_BLOCK, &stop, &old);
    fd_ = mkostemp(temp.data(), O_CLOEXEC);
    int saved = errno;
    if (fd_ >= 0) {
        temp_ = temp;
        temp_slot_ = remember_temp(temp_);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (fd_ < 0)
        fail(fmt::format("cannot create a file in {}: {}", dir.empty() ? "." : dir, strerror(saved)));
    // Readable by a collector or a later report whatever the umask
    // (mkostemp creates 0600).
    if (fchmod(fd_, 0644) != 0)
        fail(strerror(errno));
}

Output::~Output()
{
    if (!temp_.empty())
        unlink(temp_.c_str());
    forget_temp(temp_slot_);
    if (fd_ >= 0)
        close(fd_);
}

void Output::check_old(const std::string& old) const
{
    struct stat st {};
    if (lstat(old.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
        throw OutputError(fmt::format("cannot keep the existing {} as {}: that is {}, which gmemscope never "
                                      "replaces (move it away, or -f to overwrite {})",
                                      path_, old, kind_of(st.st_mode), path_));
}

void Output::write(const void* data, size_t len_bytes)
{
    const char* p = static_cast<const char*>(data);
    while (len_bytes) {
        ssize_t n = ::write(fd_, p, len_bytes);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            throw OutputError(fmt::format("writing {}: {}", path_, strerror(n < 0 ? errno : ENOSPC)));
        p += n;
        len_bytes -= size_t(n);
    }
}

void Output::publish()
{
    if (temp_.empty())
        return;
    // Checked again: something else may have been put at the path since.
    struct stat st {};
    bool exists = lstat(path_.c_str(), &st) == 0;
    if (exists && !S_ISREG(st.st_mode))
        throw OutputError(fmt::format("cannot write {}: it became {} meanwhile; left as it is, the output is in {}",
                                      path_, kind_of(st.st_mode), temp_));
    if (exists && existing_ == Existing::keep_old) {
        std::string old = path_ + ".old";
        check_old(old);
        bool had_old = access(old.c_str(), F_OK) == 0;
        if (rename(path_.c_str(), old.c_str()) != 0)
            throw OutputError(fmt::format("cannot keep the existing {} as {}: {} (-f overwrites it)", path_, old,
                                          strerror(errno)));
        note_ = fmt::format("the existing {} was kept as {}{}", path_, old,
                            had_old ? fmt::format(" (the earlier {} was replaced)", old) : "");
    } else if (exists) {
        note_ = fmt::format("the existing {} was replaced", path_);
    }
    if (rename(temp_.c_str(), path_.c_str()) != 0)
        throw OutputError(fmt::format("cannot write {}: {}; the output is in {}", path_, strerror(errno), temp_));
    temp_.clear();
    forget_temp(temp_slot_);
    temp_slot_ = -1;
    published_file_ = true;
}

void Output::commit()
{
    // fsync before the rename: a crash never leaves a name on an empty
    // file.  A pipe or a terminal has nothing to sync.
    if (!stream() && fsync(fd_) != 0)
        throw OutputError(fmt::format("writing {}: {}", path_, strerror(errno)));
    publish();
    if (close(fd_) != 0 && errno != EINTR) {
        fd_ = -1;
        throw OutputError(fmt::format("writing {}: {}", path_, strerror(errno)));
    }
    fd_ = -1;
}

OutputBuf::int_type OutputBuf::overflow(int_type c)
{
    sync();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
        *pptr() = traits_type::to_char_type(c);
        pbump(1);
    }
    return traits_type::not_eof(c);
}

int OutputBuf::sync()
{
    out_.write(pbase(), size_t(pptr() - pbase()));
    setp(buf_, buf_ + sizeof(buf_));
    return 0;
}

}  // namespace gms
