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

// One owner's entry in the index (idx_state): a process's DMA mappings
// (key: its struct mm_struct *) or declared ranges (key: its tgid).
struct IndexOwner {
    uint64_t key;
    gms_idx_state state;
};

struct EnforceStatus {
    bool active = false;           // an lsm_file_ioctl link is attached in the kernel
    uint32_t link_id = 0, prog_id = 0;
    std::optional<gms_veto_state> state;   // from that program's veto_state map
    std::vector<IndexOwner> index;         // from its idx_state map
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

// Processes holding VFIO containers or iommufd fds: their DMA mappings
// made before enforcement started are not in the index.
struct DmaHolder {
    pid_t pid;
    std::string comm;
    std::vector<std::string> fds;   // "fd 5 (/dev/vfio/vfio)"
};
std::vector<DmaHolder> dma_holders();

// Sums over owners that hold DMA mappings (not declared ranges).
struct IndexTotals {
    uint64_t mappings = 0, not_indexed = 0, unindexed_bytes = 0, processes_failing_closed = 0;
};
// Totals of the index pinned in kEnforceDir; nullopt if none.
std::optional<IndexTotals> pinned_index_totals();

// Every owner in an idx_state map.
std::vector<IndexOwner> read_index_owners(int idx_state_fd);
IndexTotals index_totals(const std::vector<IndexOwner>& owners);

// The indexed DMA mappings and declared ranges, from idx_maps.
struct PinEntry {
    uint64_t tgid;  // who mapped or declared it
    gms_pin pin;
};
std::vector<PinEntry> read_pins(int idx_maps_fd);

// Runs the index's entry point (SEC("syscall") enforce_index_op) with op;
// returns op.ret (0 or the number removed, or -errno), throws if it cannot run.
int64_t index_op(int prog_fd, gms_index_op op);
// Declares gfns [first_gfn, end_gfn) for tgid (one range per first gfn); std::invalid_argument for an
// empty or inverted range, std::runtime_error when the index cannot hold it.
void declare_range(int prog_fd, uint32_t tgid, uint64_t first_gfn, uint64_t end_gfn, const std::string& note);
// Removes the declared ranges of tgid starting at first_gfn; how many.
int undeclare_range(int prog_fd, uint32_t tgid, uint64_t first_gfn);
// The fd of a map or program enforce pinned ("idx_maps", "enforce_index_op"),
// or throws saying that no enforcement is running.
int open_pinned(const std::string& name);

}  // namespace gms
