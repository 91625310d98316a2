// Enforcement's state outside the process that set it up: what is
// attached (found among the kernel's BPF links, never assumed from files),
// the ranges operators declare, and the index of DMA mappings, through
// the maps pinned in bpffs.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/events/events.hpp"

namespace gms {

// Where `enforce` pins its maps (and, with --persist, its links); root only.
inline constexpr const char* kEnforceDir = "/sys/fs/bpf/gmemscope";

struct EnforceStatus {
    bool active = false;           // an lsm_file_ioctl link is attached in the kernel
    uint32_t link_id = 0, prog_id = 0;
    std::optional<gms_veto_state> state;   // from that program's veto_state map
    bool loader_running = false;   // the process that set it up is alive
    std::vector<std::string> pinned;       // what is pinned under kEnforceDir
};

EnforceStatus enforce_status();
nlohmann::json to_json(const EnforceStatus& s);

// The state of the enforcement pinned in kEnforceDir (running or
// persisted), with the kernel's veto counts; nullopt if none.
std::optional<gms_veto_state> pinned_veto_state();

// Removes everything pinned under kEnforceDir; persisted links detach
// once nothing else holds them. Returns what it removed.
std::vector<std::string> enforce_stop();

// The ranges declared for a process, or the DMA mappings of an mm, from
// a map of gms_pin_set (declared / dma_pins).
struct PinEntry {
    uint64_t key;   // tgid (declared) or struct mm_struct * (dma_pins)
    gms_pin pin;
};
std::vector<PinEntry> read_pins(int map_fd);
// Adds [first_gfn, end_gfn) for tgid; throws when the set is full.
void declare_range(int map_fd, uint32_t tgid, uint64_t first_gfn, uint64_t end_gfn, const std::string& note);
// Removes the declared ranges of tgid starting at first_gfn; how many.
int undeclare_range(int map_fd, uint32_t tgid, uint64_t first_gfn);
// The fd of a map enforce pinned ("declared", "dma_pins"), or throws
// saying that no enforcement is running.
int open_pinned_map(const std::string& name);

}  // namespace gms
