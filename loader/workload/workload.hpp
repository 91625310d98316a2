// The built-in workload: real KVM VMs whose guest writes into
// guest_memfd-backed memory, plus the scenarios gmemscope traces
// (fault, punch-storm, punch-empty, rebind, churn, convert).
//
// The guest is a few instructions of 64-bit user-mode (CPL3) code, because
// under PVM only CPL3 guest code runs natively; CPL0 code is emulated and
// its writes go through the slot's userspace_addr, never through gmem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "loader/base/fd.hpp"

namespace gms::workload {

inline constexpr std::uint64_t page_bytes = 4096;

using gms::Fd;
using gms::Mapping;

struct VmConfig {
    std::uint64_t gmem_size_bytes = 16ull << 20;
    std::uint64_t slot_pages = 1024;
    std::uint64_t gmem_offset_bytes = 0;
    std::uint64_t base_gpa = 0x40000000;  // gfn 0x40000
};

enum class ConvertKind {
    vm_attributes,     // KVM_SET_MEMORY_ATTRIBUTES on the VM fd, gpa range (upstream)
    gmem_attributes2,  // KVM_SET_MEMORY_ATTRIBUTES2 on the gmem fd, offset range (v8 series)
    gmem_convert,      // KVM_GMEM_CONVERT_SHARED/PRIVATE on the gmem fd (2025 RFC)
};

std::string_view to_string(ConvertKind kind);

// What the kernel answered to one conversion ioctl.
struct ConvertAnswer {
    ConvertKind kind = ConvertKind::vm_attributes;
    bool to_private = false;
    int error = 0;  // errno, 0 on success
    // The argument's error_offset after the call (passed in as 0, so 0
    // unless the kernel wrote it); nullopt for vm_attributes, whose struct
    // has no such field.
    std::optional<std::uint64_t> error_offset;
};

// One VM with one vCPU, slot 0 (anonymous: page tables and code) and
// slot 1 (guest_memfd, MMAP|INIT_SHARED, mmap()ed as userspace_addr).
// Set-up failures throw std::system_error naming the ioctl; a guest that
// leaves other than through its `out` throws std::runtime_error with the
// exit reason and registers. A moved-from Vm may only be destroyed or
// assigned to.
class Vm {
public:
    static constexpr std::uint32_t gmem_slot = 1;
    static constexpr std::uint16_t exit_port = 0x10;

    explicit Vm(const VmConfig& config = {});
    // A VM whose slot 1 is ordinary memory at `addr` (KVM_SET_USER_MEMORY_REGION,
    // no gmem), such as a buffer a device has DMA-mapped.
    struct UserMemory {
        std::byte* addr;
        std::uint64_t npages;
        std::uint64_t gpa;
    };
    explicit Vm(const UserMemory& slot1);
    // A KVM_X86_SW_PROTECTED_VM (type 1: private memory without SEV or
    // TDX hardware) whose slot 1 is a gmem memslot with an anonymous
    // buffer of slot_pages as its shared userspace_addr. The gmem file has
    // no flags (a VM with private memory may not make it INIT_SHARED), so
    // the host never maps it; every gfn starts shared. Throws
    // std::runtime_error on a kernel without type-1 VMs or without
    // KVM_MEMORY_ATTRIBUTE_PRIVATE.
    struct PrivateMemory {
        std::uint64_t gmem_size_bytes;
        std::uint64_t slot_pages;
        std::uint64_t gmem_offset_bytes;
        std::uint64_t base_gpa;
    };
    explicit Vm(const PrivateMemory& config);
    Vm(Vm&&) noexcept = default;
    Vm& operator=(Vm&&) noexcept = default;
    Vm(const Vm&) = delete;
    Vm& operator=(const Vm&) = delete;
    ~Vm() = default;

    // Runs the vCPU once (one KVM_RUN), writing one byte to each page
    // [first_page, first_page + npages) of the gmem slot; npages 0 does
    // not enter the guest.
    void touch(std::uint64_t first_page, std::uint64_t npages);
    // One more KVM_RUN after a touch: the guest loops on its `out`, so
    // each call is one exit to user space.
    void exit_once();
    // fallocate(PUNCH_HOLE|KEEP_SIZE) on the gmem fd: 0 or -errno.
    int punch(std::uint64_t offset_bytes, std::uint64_t len_bytes);
    // Deletes the gmem memslot (KVM_SET_USER_MEMORY_REGION2, memory_size 0).
    void delete_slot();
    // (Re)creates the gmem memslot; userspace_addr follows the gmem offset
    // in the gmem mmap so host and guest see the same pages.
    void bind_slot(std::uint64_t gpa, std::uint64_t npages, std::uint64_t gmem_offset_bytes);
    // Deletes the memslot if bound, munmap()s and closes the gmem fd.
    void close_gmem();
    // Never throws for a kernel refusal: the errno is the answer.
    // start is a gpa for vm_attributes and a gmem offset otherwise.
    ConvertAnswer convert(ConvertKind kind, std::uint64_t start, std::uint64_t size_bytes,
                          bool to_private);
    // KVM_CREATE_GUEST_MEMFD with no flags, neither bound nor mmap()ed
    // (what a VM that is not gmem-only may create): 0 or -errno.
    int create_unbound_gmem(std::uint64_t size_bytes);
    // Deletes slot 1, whatever backs it.
    void delete_user_slot();
    // KVM_CHECK_EXTENSION on the VM fd: the value, or -errno.
    int check_extension(long cap) const;

    int kvm_fd() const { return kvm_.get(); }
    int vm_fd() const { return vm_.get(); }
    int vcpu_fd() const { return vcpu_.get(); }
    int gmem_fd() const { return gmem_.get(); }
    bool slot_bound() const { return slot_bound_; }
    std::uint64_t base_gpa() const { return base_gpa_; }
    std::uint64_t base_gfn() const { return base_gpa_ / page_bytes; }
    std::uint64_t slot_pages() const { return slot_pages_; }
    std::uint64_t gmem_offset_bytes() const { return gmem_offset_bytes_; }
    std::uint64_t gmem_pgoff() const { return gmem_offset_bytes_ / page_bytes; }
    std::uint64_t gmem_size_bytes() const { return gmem_size_bytes_; }
    // Slot 1's shared backing (a private VM's userspace_addr); nullptr otherwise.
    std::byte* shared_addr() const { return shared_.addr(); }
    std::uint64_t gmem_ino() const { return gmem_ino_; }
    // The host's view of the whole gmem file (empty after close_gmem()).
    std::span<std::byte> gmem_mapping() const;

private:
    void create_vm(unsigned long type = 0);
    void create_slot0();
    void create_gmem(std::uint64_t size_bytes);
    void create_private_gmem(std::uint64_t size_bytes);
    void create_vcpu();
    void set_region(std::uint64_t gpa, std::uint64_t size_bytes, std::uint64_t gmem_offset_bytes);
    void run_guest(std::uint64_t gpa, std::uint64_t npages);
    std::string describe_exit() const;

    Fd kvm_;
    Fd vm_;
    Mapping slot0_;
    Fd gmem_;
    Mapping gmem_map_;
    Mapping shared_;
    Fd vcpu_;
    Mapping run_;
    bool slot_bound_ = false;
    std::uint64_t base_gpa_ = 0;
    std::uint64_t slot_pages_ = 0;
    std::uint64_t gmem_offset_bytes_ = 0;
    std::uint64_t gmem_ino_ = 0;
    std::uint64_t gmem_size_bytes_ = 0;
};

enum class ScenarioKind { fault, punch_storm, punch_empty, rebind, churn, convert, dma, private_memory, exits };

std::string_view to_string(ScenarioKind kind);

// Parameters of every scenario; each scenario reads the ones it needs.
//   fault        one VM touches `pages` pages (one KVM_RUN).
//   punch-storm  per thread: touch all `range_pages` pages (one KVM_RUN),
//                punch them `punch_pages` at a time, one fallocate each,
//                and start over; an op is one punch. With vms > 1 each
//                round goes to the thread's next VM.
//   punch-empty  the same punches over a range that is never faulted.
//   rebind       one VM: touch `pages`, punch the first `punch_pages` (one
//                fallocate per page), delete the memslot, rebind it at
//                rebind_offset, touch `pages` again, close the gmem fd.
//   churn        per thread: delete the memslot, rebind it alternately at
//                rebind_offset and gmem_offset, touch `pages`; an op is one
//                rebind.
//   convert      one VM: touch `pages`, then for each ConvertKind ask for
//                private and then shared over those pages.
//   dma          a VM whose slot 1 is a buffer of `pages` mapped for DMA
//                through VFIO type1 (group `vfio_group`, at `iova`): map
//                (pins), touch, an unbound gmem file and a punch in it,
//                KVM_SET_MEMORY_ATTRIBUTES over the buffer, unmap,
//                MADV_DONTNEED of the buffer, delete the slot, a map
//                past RLIMIT_MEMLOCK without CAP_IPC_LOCK, a udmabuf.
//                Steps the kernel refuses are results (Result::steps),
//                not errors: no VFIO group means no VFIO steps.
//   private      a KVM_X86_SW_PROTECTED_VM with a gmem memslot of `pages`
//                (loader/workload/private.cpp): touch (shared), convert
//                the first `private_pages` to private, touch (private
//                faults from gmem), punch the first `punch_pages` (one
//                fallocate each), touch, convert back to shared, delete
//                and rebind the memslot, touch; then the same private
//                range's shared backing DMA-mapped through VFIO type1
//                (group `vfio_group`) and through iommufd (device cdev
//                `vfio_device`), each at `iova`, converted to private
//                while mapped and again after the unmap; an
//                IOMMU_IOAS_MAP_FILE of a memfd; with `poison` 1, a
//                memory failure (MADV_HWPOISON) on a page of another VM's
//                gmem. Needs a kernel with CONFIG_KVM_SW_PROTECTED_VM.
//                Conversions and DMA steps are results (Result::steps).
//   exits        per thread: one VM whose vCPU exits to user space on its
//                `out` in a loop; an op is one KVM_RUN that returns one
//                exit (KVM_EXIT_IO), the cost every VM pays per exit.
// The threaded ones (punch-storm, punch-empty, churn, exits) stop at `count` ops
// or after `duration_ms`, whichever comes first (1000 ms if neither is
// set), and are timed from when every VM is built.
// hold_ms keeps the VMs alive that long after the scenario's work (rebind:
// before it closes the gmem fd), logging "holding" first, so that a test
// can audit them; it is not timed.
struct Scenario {
    ScenarioKind kind = ScenarioKind::fault;
    std::uint64_t pages = 64;        // fault, rebind, churn: pages touched
    std::uint64_t punch_pages = 1;   // punch-storm: pages per punch; rebind: pages punched
    std::uint64_t range_pages = 64;  // punch-storm, punch-empty: range punched over
    std::uint64_t count = 0;         // ops per run (all threads); 0: use duration_ms
    std::uint64_t duration_ms = 0;   // 0 with count 0: 1000
    std::uint64_t rate = 0;          // ops/s over all threads; 0: unlimited
    unsigned threads = 1;            // each thread has its own VMs
    unsigned vms = 1;                // VMs per thread, used round-robin
    std::uint64_t gmem_offset_bytes = 0;
    std::uint64_t rebind_offset_bytes = 4ull << 20;
    std::uint64_t gmem_size_bytes = 0;  // 0: just large enough
    std::uint64_t base_gpa = 0x40000000;
    std::uint64_t hold_ms = 0;
    std::uint64_t vfio_group = ~0ull;   // dma: /dev/vfio/N; default: the first there
    std::uint64_t iova = 1ull << 20;    // dma, private: where the buffer is mapped
    std::uint64_t private_pages = 16;   // private: pages converted to private
    std::uint64_t vfio_device = ~0ull;  // private: /dev/vfio/devices/vfioN; default: the first
    std::uint64_t poison = 1;           // private: 1 poisons one gmem page, 0 does not
};

// One step of a scenario and what the kernel answered (dma).
struct Step {
    std::string name;
    int error = 0;   // errno, 0 on success
    std::string detail;
};

struct Result {
    ScenarioKind kind = ScenarioKind::fault;
    std::uint64_t ops = 0;  // the scenario's unit: punches, pages, rebinds, conversions
    std::uint64_t pages_touched = 0;
    std::uint64_t punches = 0;
    std::uint64_t rebinds = 0;
    std::uint64_t vcpu_runs = 0;
    std::uint64_t elapsed_ns = 0;
    std::uint64_t gmem_ino = 0;  // of the first VM
    std::vector<ConvertAnswer> conversions;
    std::vector<Step> steps;
    std::uint64_t buffer_vaddr = 0;   // dma: the DMA-mapped buffer, slot 1's memory

    double ops_per_s() const;
};

// Runs a scenario on fresh VMs. log, when given, gets one line per step.
// Throws std::invalid_argument for inconsistent parameters (before any VM
// exists), std::system_error for a failed set-up or kernel call, and
// std::runtime_error when a guest exits other than through its `out`.
Result run(const Scenario& scenario, std::ostream* log = nullptr);

// Builds a Scenario from a name ("fault", "punch-storm", ...) and
// "key=value" settings. Keys are the field names, with the byte fields
// spelled gmem_offset, rebind_offset, gmem_size (and base_gpa); numbers
// accept 0x, those four also a K/M/G suffix.
// Throws std::invalid_argument naming the unknown scenario, key or value,
// or the parameters that do not fit together (the checks run() makes).
Scenario parse_scenario(std::string_view name, std::span<const std::string> settings);

// A VFIO type1 container with one IOMMU group attached
// (loader/workload/dma.cpp). Calls return 0 or an errno.
class VfioContainer {
public:
    // group ~0: the first /dev/vfio/<N>. detail says which, or why not.
    int open(std::uint64_t group, std::string& detail);
    // VFIO_IOMMU_MAP_DMA: type1 pins the pages now.
    int map(const std::byte* vaddr, std::uint64_t iova, std::uint64_t bytes) const;
    int unmap(std::uint64_t iova, std::uint64_t bytes) const;
    int fd() const { return container_.get(); }
    // VFIO_GROUP_GET_DEVICE_FD of the group's first device (sysfs
    // iommu_groups/<N>/devices): the fd, or -errno; detail names it.
    int device_fd(std::string& detail) const;

private:
    Fd container_;
    Fd group_;
    std::string group_path_;
};

// The dma scenario (loader/workload/dma.cpp).
Result run_dma(const Scenario& scenario, std::ostream* log = nullptr);

// The private scenario (loader/workload/private.cpp).
Result run_private(const Scenario& scenario, std::ostream* log = nullptr);

// Names of the scenarios and keys parse_scenario() accepts, for help text.
std::vector<std::string_view> scenario_names();
std::vector<std::string_view> scenario_keys();

}  // namespace gms::workload
