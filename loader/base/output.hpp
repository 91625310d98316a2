// A file the user names for gmemscope to write (record -o, export -o,
// daemon --textfile), as perf and bpftrace -o treat theirs: `-`, a
// character device, a FIFO or a pipe (also through a symlink such as
// /dev/stdout) is written as a stream, in place; a regular file (or a new
// name) is written to a temporary file beside it, which takes the name by
// rename() once published.  Nothing but a regular file is ever replaced or
// renamed; everything else (a directory, a block device, a socket, a
// symlink to a regular file or to nothing) is refused when the Output is
// opened, which a command does before it loads any BPF program.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <string_view>

namespace gms {

// Why an output cannot be written; the message names the path.
struct OutputError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Output {
public:
    // What happens to an existing regular file at the path when the new
    // one takes its name: replaced, or kept as PATH.old (an earlier
    // PATH.old that is a regular file is replaced, and note() says so;
    // one that is anything else is refused, as the path would be).
    enum class Existing { replace, keep_old };

    // Throws OutputError when `path` cannot be written.  A FIFO is opened
    // as a shell redirection opens it: this waits for a reader.
    Output(std::string path, Existing existing);
    // A temporary file not yet published is removed (also when SIGINT,
    // SIGTERM or SIGHUP end the process while they have their default
    // action).
    ~Output();
    Output(const Output&) = delete;
    Output& operator=(const Output&) = delete;

    const std::string& path() const { return path_; }
    int fd() const { return fd_; }
    // Written in place: `-`, a character device, a FIFO or a pipe.
    bool stream() const { return temp_.empty() && !published_file_; }
    // Written to gmemscope's own stdout (`-`, /dev/stdout, /proc/self/fd/1).
    bool is_stdout() const { return is_stdout_; }

    // All of it, or OutputError (a full disk, a reader gone).
    void write(const void* data, size_t len_bytes);
    void write(std::string_view text) { write(text.data(), text.size()); }
    // The temporary file takes the path's name now (an existing file
    // replaced or kept as PATH.old); what is written later goes there
    // too.  Nothing for a stream; once only.
    void publish();
    // Everything is written: on disk (fsync) for a file, then published.
    void commit();
    // What publish() did with an existing file ("" when nothing): one
    // sentence for the user.
    const std::string& note() const { return note_; }

private:
    void check_old(const std::string& old) const;

    std::string path_, temp_, note_;
    Existing existing_;
    int fd_ = -1;
    int temp_slot_ = -1;          // in the signal handler's list of files to remove
    bool is_stdout_ = false;
    bool published_file_ = false;
};

// A std::ostream's buffer writing to an Output (PerfettoWriter takes a
// stream); a write error is thrown as OutputError from the stream call.
class OutputBuf : public std::streambuf {
public:
    explicit OutputBuf(Output& out) : out_(out) { setp(buf_, buf_ + sizeof(buf_)); }

protected:
    int_type overflow(int_type c) override;
    int sync() override;

private:
    Output& out_;
    char buf_[64 << 10];
};

}  // namespace gms
