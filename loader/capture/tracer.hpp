// The BPF side as one object: open -> configure -> load -> attach, and
// a consumer that decodes ring-buffer records into Events.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <cerrno>
#include <string>
#include <vector>

#include "loader/probe/catalog.hpp"
#include "loader/events/events.hpp"
#include "loader/probe/features.hpp"

struct gmemscope_bpf;
struct ring_buffer;
struct bpf_link;

namespace gms {

struct TraceOptions {
    std::vector<pid_t> tgids;       // empty: every process
    bool follow_forks = false;      // children of traced tgids are traced too
    std::vector<uint64_t> vms;      // struct kvm * values; empty: every VM
    std::vector<std::string> hooks; // --hooks list (see select_hooks); empty: default
    bool aggregate = false;         // punches, page-cache changes and faults only counted in the kernel
    uint32_t stack_sample = 0;      // aggregate: 1 in N page removals records its stacks; 0: none
    uint64_t ringbuf_bytes = 16u << 20;
    uint64_t wakeup_bytes = 1u << 20;  // wake the consumer past this much data
    Refused refused;                   // programs not to use, and why (hooks --selftest)
    // Enforcement (gmemscope enforce): enum gms_veto_mode; OFF traces only.
    uint32_t veto_mode = GMS_VETO_OFF;
    int veto_errno = EBUSY;
    bool veto_only = false;            // only what enforcement needs: no tracing hooks
    bool veto_persist = false;         // recorded in veto_state for --status
    bool veto_fail_open = false;       // mappings the index cannot hold do not refuse conversions
    uint32_t index_max_mappings = GMS_IDX_MAX_MAPPINGS;   // per process; tests lower it
    uint32_t index_max_declared = GMS_IDX_MAX_DECLARED;
};

struct AttachedProgram {
    std::vector<std::string> hooks;   // catalog hooks it serves
    std::string mechanism;
    std::string program;
    std::string attach;               // its attach point, e.g. tp/syscalls/sys_enter_ioctl
};

// Adds v's counts and histograms to sum (not its vm and comm).
void add_counts(gms_agg_val& sum, const gms_agg_val& v);

// Every program the BPF object holds, without loading it.
std::set<std::string, std::less<>> built_programs();
// The kernel's reason, in one line, for a program libbpf failed to load
// with `err`, from libbpf's messages (`warnings`): the CO-RE relocation it
// could not resolve, or the verifier's error.
std::string refusal_reason(const std::vector<std::string>& warnings, const std::string& prog, int err);

class Tracer {
public:
    using Sink = std::function<void(const Event&)>;

    Tracer(const Features& features, const TraceOptions& opts);
    ~Tracer();
    Tracer(const Tracer&) = delete;
    Tracer& operator=(const Tracer&) = delete;

    const std::vector<HookStatus>& hooks() const { return hooks_; }
    const std::vector<AttachedProgram>& attached() const { return attached_; }
    // Programs this kernel refused, and why; their hooks fell back to their next mechanism.
    const Refused& refused() const { return refused_; }
    // Selected hooks this session cannot observe on this kernel -> why.
    std::vector<std::pair<std::string, std::string>> unobserved() const;
    // The fd of one of the object's maps ("idx_maps", "idx_state", ...).
    int map_fd(const char* name) const;
    // The fd of a loaded program, -1 if not loaded (benchmarks read its run time).
    int prog_fd(const char* name) const;
    // Pins enforcement's maps in dir; with links, also the programs'
    // links, which then outlive this process (enforce --persist).
    void pin_enforcement(const std::string& dir, bool links);
    void add_tgid(pid_t tgid);

    // The fd that becomes readable when records wait (epoll fd).
    int ready_fd() const;
    // Consumes every record waiting; returns how many.
    uint64_t consume(const Sink& sink);
    // Kernel counters summed over CPUs, with what this consumer received.
    gms_drops_record counters() const;
    struct SampledStack {
        uint32_t tgid;
        std::vector<uint64_t> user, kernel;   // innermost first
        uint64_t count;
    };
    // The stacks sampled at gmem page removals (aggregate mode), most first.
    std::vector<SampledStack> sampled_stacks() const;
    // The in-kernel aggregates (TraceOptions::aggregate), summed over CPUs.
    std::map<std::pair<uint64_t, uint32_t>, gms_agg_val> aggregates() const;
    // Deletes one in-kernel aggregate: the map is bounded (4096 entries),
    // and a long-running consumer retires those of exited processes.
    void forget_aggregate(uint64_t ino, uint32_t tgid);
    uint64_t decode_errors() const { return decode_errors_; }

private:
    static int on_record(void* ctx, void* data, size_t size);
    struct Refusal {
        std::string program;
        std::string reason;   // the kernel's, in one line
    };
    // Opens, configures and loads; the program the kernel refused, if any.
    std::optional<Refusal> load(const TraceOptions& opts, const std::set<std::string, std::less<>>& wanted);
    // Attaches every loaded program; the one that could not be, if any.
    std::optional<Refusal> attach(const std::set<std::string, std::less<>>& selected);
    void detach();

    std::vector<HookStatus> hooks_;
    std::set<std::string, std::less<>> selected_;
    uint32_t gmem_dev_ = 0;   // the kernel's dev_t of gmem inodes (targ_gmem_dev)
    std::vector<AttachedProgram> attached_;
    Refused refused_;
    struct gmemscope_bpf* skel_ = nullptr;
    struct ring_buffer* rb_ = nullptr;
    std::vector<struct bpf_link*> links_;
    const Sink* sink_ = nullptr;
    uint64_t received_ = 0;
    uint64_t decode_errors_ = 0;
};

}  // namespace gms
