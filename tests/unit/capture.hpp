// A tracer on this process for tests that run the built-in workload in
// it and assert on the exact records the kernel sent.
#pragma once

#include <unistd.h>

#include <string>
#include <vector>

#include "loader/capture/tracer.hpp"

namespace gms::test {

enum class Tier { best, portable };

struct Capture {
    // Tier::portable rules out every precise-tier program, as on a kernel
    // that refuses fentry/fexit: tests of the portable tier's exact events
    // then hold on kernels that have the precise tier too (the VM lane).
    explicit Capture(uint64_t ringbuf_bytes = 16u << 20, std::vector<std::string> hooks = {},
                     Tier tier = Tier::best)
        : features(gms::Features::probe()), tracer(features, options(ringbuf_bytes, std::move(hooks), tier))
    {
    }
    static gms::TraceOptions options(uint64_t ringbuf_bytes, std::vector<std::string> hooks, Tier tier)
    {
        gms::TraceOptions o;
        o.tgids = {getpid()};
        o.hooks = std::move(hooks);
        o.ringbuf_bytes = ringbuf_bytes;
        o.wakeup_bytes = ringbuf_bytes;  // nobody polls: consume at the end
        if (tier == Tier::portable)
            for (const gms::Hook& h : gms::catalog())
                for (const gms::Mechanism& m : h.mechanisms)
                    if (m.kind == gms::Mech::fentry || m.kind == gms::Mech::fexit)
                        for (auto p : m.programs)
                            o.refused[std::string(p)] = "the test asks for the portable tier";
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
