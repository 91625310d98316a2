// The event ABI on the C++ side: layout checks, decoding into value
// types, names, and the two renderings (human line, JSON object).
#pragma once

#include <linux/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

extern "C" {
#include "events.h"
}

#include "loader/base/errno.hpp"

namespace gms {

static_assert(sizeof(gms_hdr) == 40);
static_assert(offsetof(gms_hdr, ts_ns) == 8);
static_assert(offsetof(gms_hdr, tgid) == 16);
static_assert(offsetof(gms_hdr, comm) == 24);
static_assert(sizeof(gms_ioctl_args) == 56);
static_assert(sizeof(gms_ioctl_event) == 144);
static_assert(offsetof(gms_ioctl_event, ret) == 56);
static_assert(offsetof(gms_ioctl_event, args) == 88);
static_assert(sizeof(gms_fallocate_event) == 96);
static_assert(sizeof(gms_gmem_close_event) == 64);
static_assert(sizeof(gms_fault_event) == 96);
static_assert(offsetof(gms_fault_event, gmem_index) == 80);
static_assert(sizeof(gms_set_spte_event) == 72);
static_assert(sizeof(gms_pagecache_event) == 80);
static_assert(sizeof(gms_zap_event) == 72);
static_assert(sizeof(gms_tdp_spte_event) == 80);
static_assert(sizeof(gms_iommu_event) == 72);
static_assert(sizeof(gms_call_args) == 40);
static_assert(sizeof(gms_call_event) == 112);
static_assert(offsetof(gms_call_event, fn) == 64);
static_assert(offsetof(gms_call_event, args) == 72);
static_assert(GMS_EV_MAX <= GMS_EV_SLOTS);
static_assert(sizeof(gms_pin) == 64);
static_assert(sizeof(gms_veto_event) == 168);
static_assert(offsetof(gms_veto_event, pin) == 88);
static_assert(GMS_DROP_MAX <= GMS_DROP_SLOTS);
static_assert(sizeof(gms_drops_record) == 40 + 8 * (int(GMS_EV_SLOTS) + int(GMS_DROP_SLOTS) + 1));
static_assert(sizeof(gms_counters) == 8 * (int(GMS_EV_SLOTS) + int(GMS_DROP_SLOTS)));

using Record = std::variant<gms_ioctl_event, gms_fallocate_event, gms_gmem_close_event,
                            gms_fault_event, gms_set_spte_event, gms_pagecache_event,
                            gms_zap_event, gms_tdp_spte_event, gms_iommu_event,
                            gms_call_event, gms_veto_event, gms_drops_record>;

// One decoded record; every sink takes it by const reference.
struct Event {
    Record rec;
    const gms_hdr& hdr() const;
    uint32_t type() const { return hdr().type; }
};

// Decodes one record; nullopt with `why` set when the bytes are not a
// record of this ABI (unknown type, wrong size or version).
std::optional<Event> decode(std::span<const std::byte> bytes, std::string& why);

// Size of the record of `type`, 0 if unknown.
size_t record_size(uint32_t type);

std::string_view event_name(uint32_t type);   // "fault", "ioctl", ...
std::string comm_of(const gms_hdr& h);
// The dma-buf exporter's name in a dma-buf call record ("vfio_pci_core", "udmabuf").
std::string exporter_name(const gms_call_args& a);
std::string_view drop_cause_name(uint32_t cause);
std::string_view ioctl_op_name(uint32_t op);  // "KVM_SET_MEMORY_ATTRIBUTES", ...
std::string_view fd_kind_name(uint32_t kind);
std::string_view fn_name(uint32_t fn);        // the catalog hook it serves: "vfio.pin", ...
std::string_view pin_kind_name(uint32_t kind);   // "vfio", "iommufd", "declared"
std::string_view veto_mode_name(uint32_t mode);  // "audit", "enforce", ...
std::string describe_pin(const gms_pin& p);

nlohmann::json to_json(const Event& ev);
// A 64-bit value as a JSON number where every JSON reader holds it
// exactly (up to 2^53 - 1, IEEE double), else as a hex string.
constexpr uint64_t kJsonMaxExact = (1ull << 53) - 1;
nlohmann::json u64_json(uint64_t v);
nlohmann::json pin_json(const gms_pin& p);
// One JSON line; bytes that are not UTF-8 (a comm can hold any) are replaced.
std::string dump_line(const nlohmann::json& j);
std::string to_line(const Event& ev, uint64_t t0_ns);

}  // namespace gms
