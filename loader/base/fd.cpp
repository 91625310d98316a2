#include "loader/base/fd.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <utility>

namespace gms {

Fd::~Fd() { reset(); }

Fd::Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

Fd& Fd::operator=(Fd&& other) noexcept
{
    if (this != &other) {
        reset();
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

void Fd::reset()
{
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
}

Mapping::~Mapping() { reset(); }

Mapping::Mapping(Mapping&& other) noexcept
    : addr_(std::exchange(other.addr_, nullptr)), len_bytes_(std::exchange(other.len_bytes_, 0))
{
}

Mapping& Mapping::operator=(Mapping&& other) noexcept
{
    if (this != &other) {
        reset();
        addr_ = std::exchange(other.addr_, nullptr);
        len_bytes_ = std::exchange(other.len_bytes_, 0);
    }
    return *this;
}

void Mapping::reset()
{
    if (addr_)
        ::munmap(addr_, len_bytes_);
    addr_ = nullptr;
    len_bytes_ = 0;
}

}  // namespace gms
