// The audit: a snapshot of every VM on the host, read by a BPF iterator
// (iter/task_file, bpf/audit.bpf.c) or, where iterators are refused, from
// /proc/*/fd; with what it could not see, and findings with a severity.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/model/engine.hpp"
#include "loader/probe/features.hpp"

struct gmemscope_audit_bpf;
struct bpf_link;

namespace gms {

// One open fd of a process.
struct FdRef {
    uint32_t tgid = 0;
    std::string comm;
    int32_t fd = -1;
    auto operator<=>(const FdRef&) const = default;
};

struct AuditSlot {
    uint64_t vm = 0;
    uint16_t as_id = 0;
    Memslot slot;   // since_ns unused
};

struct AuditVcpu {
    uint32_t id = 0;
    FdRef holder;
};

// Another file that holds a VM: a VM's or vCPU's stats file
// (KVM_GET_STATS_FD) or a device made by KVM_CREATE_DEVICE.
struct AuditVmFile {
    FdRef holder;
    std::string kind;                // vm_stats, vcpu_stats, kvm_device (fd_kind_name)
    std::string name;                // its dentry name: kvm-vm-stats, kvm-vcpu-stats:0, kvm-vfio
    auto operator<=>(const AuditVmFile&) const = default;
};

struct AuditVm {
    uint64_t id = 0;                 // struct kvm *; 0 when read from /proc (unknown)
    std::vector<FdRef> vm_fds;       // processes holding a kvm-vm fd
    std::vector<AuditVcpu> vcpus;
    std::vector<AuditVmFile> files;  // stats files and KVM devices
    std::vector<AuditSlot> memslots;
    bool memslots_truncated = false;
    uint64_t memslots_lost = 0;      // read and not delivered: the iterator's ring buffer was full
    bool walk_incomplete = false;    // a walk stopped at its step bound
    // gfn ranges with non-zero KVM_MEMORY_ATTRIBUTE_* (kvm->mem_attr_array);
    // every other gfn is shared
    struct AttrRange {
        uint64_t first_gfn, end_gfn, attributes;
    };
    std::vector<AttrRange> attrs;
    bool attrs_walked = false;       // the attributes pass reached it (from a VM fd)
    bool attrs_read = false;         // ... and this kernel keeps per-VM attributes
    bool attrs_incomplete = false;   // ranges lost (ring buffer full) or the walk stopped at its bound
    int32_t created_vcpus = 0, online_vcpus = 0;
    uint64_t nr_memslot_pages = 0;
};

struct AuditGmem {
    uint64_t ino = 0;
    uint64_t vm = 0;                 // 0 when read from /proc
    uint64_t size_bytes = 0;
    uint64_t flags = 0;
    uint64_t resident_pages = 0;
    std::vector<FdRef> holders;      // processes holding a gmem fd
    std::vector<AuditSlot> bindings; // memslots bound to it
};

struct AuditDevice {
    std::string kind;                // vfio_container, vfio_group, vfio_device, iommufd
    std::string path;                // /dev/vfio/3, anon_inode:[vfio-device], ...
    FdRef holder;
};

enum class Severity { info, warning, error, critical };
std::string_view severity_name(Severity s);

struct Finding {
    Severity severity = Severity::info;
    std::string code;                // gmem_unbound, gmem_orphan, dma_private, ...
    std::string message;
    uint64_t vm = 0;
    uint64_t gmem_ino = 0;
};

struct AuditReport {
    std::string source;              // "iterator" or "procfs"
    std::vector<std::string> unseen; // what this source could not see, in words
    std::vector<AuditVm> vms;        // by id (procfs: by holder)
    std::vector<AuditGmem> gmem;     // by ino
    std::vector<AuditDevice> devices;
    std::vector<PinOverlap> dma;     // from a recording (-i): DMA-mapped and pinned gfn ranges
    std::vector<uint64_t> dma_vms;   // the VM of each dma entry (struct kvm *)
    std::vector<uint64_t> dma_vm_keys;   // and its key in the recording's engine
    std::string recording;           // path, "" without -i
    std::vector<Finding> findings;   // most severe first

    uint64_t memslot_count() const;
    uint64_t resident_pages() const;
};

// Reads the host through the iterator, loaded once and run on each call.
class Auditor {
public:
    // Loads bpf/audit.bpf.c if the kernel lets it; otherwise every run()
    // reads /proc and fallback_reason() says why.
    // slot_ringbuf_bytes: the memslot ring buffer's size, 0 for the default
    // (GMS_AUDIT_RINGBUF_BYTES); a power of two of pages.
    explicit Auditor(const Features* features, bool force_procfs = false, uint32_t slot_ringbuf_bytes = 0);
    ~Auditor();
    Auditor(const Auditor&) = delete;
    Auditor& operator=(const Auditor&) = delete;

    // A snapshot; `recording` (an engine fed a recording) adds the DMA
    // mappings, pins, attributes and failed conversions it knows.
    AuditReport run(const Engine* recording = nullptr, const std::string& recording_path = "") const;
    const std::string& fallback_reason() const { return fallback_; }

private:
    void read_iterator(AuditReport& r) const;
    struct gmemscope_audit_bpf* skel_ = nullptr;
    struct bpf_link* link_ = nullptr;
    struct bpf_link* attrs_link_ = nullptr;   // the attributes pass (bpf/audit.bpf.c audit_attrs)
    std::string attrs_refused_;                // why that pass does not run, "" if it does
    std::string fallback_;
};

// The report's findings, from what it holds (exposed for tests).
std::vector<Finding> find_problems(const AuditReport& r, const Engine* recording);

nlohmann::json to_json(const AuditReport& r);
std::string to_text(const AuditReport& r);

}  // namespace gms
