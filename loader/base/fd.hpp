// Owned kernel resources: a file descriptor and an mmap() region, closed
// and unmapped when their owner goes.
#pragma once

#include <cstddef>

namespace gms {

// An owned file descriptor; -1 when empty.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd();
    Fd(Fd&& other) noexcept;
    Fd& operator=(Fd&& other) noexcept;
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;

    int get() const { return fd_; }
    void reset();

private:
    int fd_ = -1;
};

// An owned mmap() region; empty when addr() is nullptr.
class Mapping {
public:
    Mapping() = default;
    Mapping(void* addr, std::size_t len_bytes) : addr_(addr), len_bytes_(len_bytes) {}
    ~Mapping();
    Mapping(Mapping&& other) noexcept;
    Mapping& operator=(Mapping&& other) noexcept;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;

    std::byte* addr() const { return static_cast<std::byte*>(addr_); }
    std::size_t len_bytes() const { return len_bytes_; }
    void reset();

private:
    void* addr_ = nullptr;
    std::size_t len_bytes_ = 0;
};

}  // namespace gms
