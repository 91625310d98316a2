// What a stream of events did to each VM's memory: memslots and their
// gmem bindings, and per gfn range the faults, punches and where the
// page lives now.  Fed live or from a recording; used by `report` and
// the README's main job.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/events.hpp"

namespace gms {

struct Binding {
    uint32_t slot = 0;
    uint64_t base_gfn = 0;
    uint64_t pages = 0;
    uint64_t gmem_ino = 0;
    uint64_t gmem_pgoff = 0;   // gmem offset in pages
    uint64_t bound_ns = 0;
    uint64_t unbound_ns = 0;   // 0 while bound
};

struct PageState {
    uint64_t gmem_ino = 0;
    uint64_t gmem_index = 0;
    uint64_t pfn = 0;
    uint32_t faults = 0;
    uint32_t punches = 0;
    bool resident = false;     // in the gmem page cache now
};

struct VmSummary {
    uint32_t tgid = 0;
    std::string comm;
    std::vector<Binding> bindings;        // in order of binding
    std::map<uint64_t, PageState> pages;  // by gfn
    std::map<uint64_t, uint64_t> gmem_closed_ns;  // ino -> close time
    uint64_t unbound_deletes = 0;         // page-cache deletes of no bound gfn
};

class Summary {
public:
    void add(const Event& ev);
    nlohmann::json to_json() const;
    std::string to_text() const;

private:
    VmSummary& vm(uint64_t id, const gms_hdr& h);
    const Binding* binding_of(const VmSummary& v, uint64_t ino, uint64_t index) const;
    void on_ioctl(const gms_ioctl_event& e);
    void on_pagecache(const gms_pagecache_event& e);

    uint64_t t0_ns_ = 0;
    std::map<uint32_t, uint64_t> counts_;       // by event type
    std::map<uint64_t, VmSummary> vms_;         // by struct kvm *
    std::map<uint64_t, uint64_t> gmem_owner_;   // gmem ino -> vm
    std::vector<nlohmann::json> failures_;      // ioctls that failed
    gms_drops_record counters_{};
    bool have_counters_ = false;
};

}  // namespace gms
