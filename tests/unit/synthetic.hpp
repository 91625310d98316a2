// SYNTHETIC records, built by the tests (not read from a kernel): the
// builders test_engine, test_perfetto, test_recording and test_outputs
// share.
#pragma once

#include <cstring>

#include "loader/events/events.hpp"

namespace gms::syn {

constexpr uint32_t kTgid = 4242;   // the process of every synthetic record, "synthetic"

// A record of type `type` at `ts_ns`, zeroed, its header filled in as the
// BPF side fills it.
template <class R>
R record(uint32_t type, uint64_t ts_ns)
{
    R r{};
    r.hdr.type = static_cast<__u16>(type);
    r.hdr.abi = GMS_ABI_VERSION;
    r.hdr.size = static_cast<__u16>(sizeof(R));
    r.hdr.ts_ns = ts_ns;
    r.hdr.tgid = r.hdr.pid = kTgid;
    std::strcpy(r.hdr.comm, "synthetic");
    return r;
}

// An ioctl on a VM fd of `vm` that returned `ret`.
inline gms_ioctl_event ioctl(uint64_t ts_ns, uint16_t op, uint64_t vm, int64_t ret, uint32_t fd = 4)
{
    auto e = record<gms_ioctl_event>(GMS_EV_IOCTL, ts_ns);
    e.vm = vm;
    e.op = op;
    e.ret = ret;
    e.fd = fd;
    e.fd_kind = GMS_FD_VM;
    return e;
}

}  // namespace gms::syn
