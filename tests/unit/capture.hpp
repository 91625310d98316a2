// A tracer on this process for tests that run the built-in workload in
// it and assert on the exact records the kernel sent.
#pragma once

#include <unistd.h>

#include <string>
#include <vector>

#include "loader/capture/tracer.hpp"

namespace gms::test {

struct Capture {
    explicit Capture(uint64_t ringbuf_bytes = 16u << 20, std::vector<std::string> hooks = {})
        : features(gms::Features::probe()), tracer(features, options(ringbuf_bytes, std::move(hooks)))
    {
    }
    static gms::TraceOptions options(uint64_t ringbuf_bytes, std::vector<std::string> hooks)
    {
        gms::TraceOptions o;
        o.tgids = {getpid()};
        o.hooks = std::move(hooks);
        o.ringbuf_bytes = ringbuf_bytes;
        o.wakeup_bytes = ringbuf_bytes;  // nobody polls: consume at the end
        return o;
    }
    void drain()
    {
        tracer.consume([this](const gms::Event& e) { events.push_back(e); });
    }
    template <typename T>
    std::vector<T> all(uint32_t type) const
    {
        std::vector<T> out;
        for (const auto& e : events)
            if (e.type() == type)
                out.push_back(std::get<T>(e.rec));
        return out;
    }
    gms::Features features;
    gms::Tracer tracer;
    std::vector<gms::Event> events;
};

}  // namespace gms::test
