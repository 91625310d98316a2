#include "loader/workload/workload.hpp"

#include "loader/base/errno.hpp"

#include "loader/workload/kvm_uapi.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <barrier>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

namespace gms::workload {

namespace {

using Clock = std::chrono::steady_clock;

// Guest physical layout of slot 0 (anonymous memory).
constexpr std::uint32_t slot0_id = 0;
constexpr std::uint64_t slot0_bytes = 2ull << 20;
constexpr std::uint64_t pml4_gpa = 0x1000;
constexpr std::uint64_t pdpt_gpa = 0x2000;
constexpr std::uint64_t pd_gpa = 0x3000;  // one PD per GiB mapped
constexpr std::uint64_t mapped_gib = 64;  // identity map 0..64 GiB
constexpr std::uint64_t code_gpa = 0x100000;
constexpr std::uint64_t gib_bytes = 1ull << 30;
static_assert(pd_gpa + mapped_gib * page_bytes <= code_gpa);

constexpr std::uint64_t pte_present = 1 << 0;
constexpr std::uint64_t pte_rw = 1 << 1;
constexpr std::uint64_t pte_user = 1 << 2;  // the guest runs at CPL3
constexpr std::uint64_t pte_large = 1 << 7;

// loop: mov byte [rdi], 1; add rdi, 0x1000; dec rcx; jnz loop;
//       out 0x10, al; jmp back to the out.
// Exits through `out`, not `hlt`: hlt at CPL3 is #GP, which with no IDT
// becomes #DF and then KVM_EXIT_SHUTDOWN.
constexpr std::array<std::uint8_t, 19> guest_code = {
    0xc6, 0x07, 0x01,                          // mov byte [rdi], 1
    0x48, 0x81, 0xc7, 0x00, 0x10, 0x00, 0x00,  // add rdi, 0x1000
    0x48, 0xff, 0xc9,                          // dec rcx
    0x75, 0xf1,                                // jnz loop
    0xe6, Vm::exit_port,                       // out 0x10, al
    0xeb, 0xfc,                                // jmp to the out
};

// IOPL 3 lets CPL3 code execute `out` without a TSS I/O bitmap on VMX and
// SVM. PVM does not keep it (KVM_GET_REGS after a run shows IOPL 0) and
// turns the `out` into KVM_EXIT_IO regardless.
constexpr std::uint64_t guest_rflags = 0x3002;

[[noreturn]] void throw_errno(int err, const std::string& what)
{
    throw std::system_error(err, std::generic_category(), what);
}

template <typename Arg>
int xioctl(int fd, unsigned long request, Arg arg, const char* name)
{
    int ret = ::ioctl(fd, request, arg);
    if (ret < 0)
        throw_errno(errno, name);
    return ret;
}

std::string hex(std::uint64_t value)
{
    std::ostringstream out;
    out << "0x" << std::hex << value;
    return out.str();
}

Mapping map_or_throw(std::size_t len_bytes, int prot, int flags, int fd, const char* what)
{
    void* addr = ::mmap(nullptr, len_bytes, prot, flags, fd, 0);
    if (addr == MAP_FAILED)
        throw_errno(errno, what);
    return Mapping(addr, len_bytes);
}

void build_page_tables(std::byte* slot0)
{
    auto table = [slot0](std::uint64_t gpa) {
        return reinterpret_cast<std::uint64_t*>(slot0 + gpa);
    };
    table(pml4_gpa)[0] = pdpt_gpa | pte_present | pte_rw | pte_user;
    for (std::uint64_t gib = 0; gib < mapped_gib; ++gib) {
        std::uint64_t pd = pd_gpa + gib * page_bytes;
        table(pdpt_gpa)[gib] = pd | pte_present | pte_rw | pte_user;
        for (std::uint64_t i = 0; i < 512; ++i)
            table(pd)[i] = ((gib * 512 + i) << 21) | pte_present | pte_rw | pte_user | pte_large;
    }
}

kvm_segment user_segment(std::uint16_t selector, std::uint8_t type, bool code)
{
    kvm_segment seg{};
    seg.base = 0;
    seg.limit = 0xffffffff;
    seg.selector = selector;
    seg.type = type;
    seg.present = 1;
    seg.dpl = 3;
    seg.s = 1;
    seg.g = 1;
    seg.l = code ? 1 : 0;
    seg.db = code ? 0 : 1;  // a 64-bit code segment must have D clear
    return seg;
}

std::string exit_reason_name(std::uint32_t reason)
{
    switch (reason) {
    case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "KVM_EXIT_EXCEPTION";
    case KVM_EXIT_IO: return "KVM_EXIT_IO";
    case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
    case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
    case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
    case KVM_EXIT_INTR: return "KVM_EXIT_INTR";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
    case uapi::kvm_exit_memory_fault: return "KVM_EXIT_MEMORY_FAULT";
    default: return "exit reason " + std::to_string(reason);
    }
}

std::string errno_name(int err) { return err ? gms::errno_name(-err) : "ok"; }

}  // namespace

// --- Vm ---------------------------------------------------------------------

std::string_view to_string(ConvertKind kind)
{
    switch (kind) {
    case ConvertKind::vm_attributes: return "vm_attributes";
    case ConvertKind::gmem_attributes2: return "gmem_attributes2";
    case ConvertKind::gmem_convert: return "gmem_convert";
    }
    return "?";
}

Vm::Vm(const VmConfig& config)
{
    create_vm();
    create_slot0();
    create_gmem(config.gmem_size_bytes);
    bind_slot(config.base_gpa, config.slot_pages, config.gmem_offset_bytes);
    create_vcpu();
}

Vm::Vm(const PrivateMemory& config)
{
    create_vm(uapi::kvm_x86_sw_protected_vm);
    int attributes = check_extension(uapi::kvm_cap_memory_attributes);
    if (attributes < 0 || !(static_cast<std::uint64_t>(attributes) & uapi::kvm_memory_attribute_private))
        throw std::runtime_error("a KVM_X86_SW_PROTECTED_VM without KVM_MEMORY_ATTRIBUTE_PRIVATE "
                                 "(KVM_CAP_MEMORY_ATTRIBUTES " + std::to_string(attributes) + ")");
    create_slot0();
    create_private_gmem(config.gmem_size_bytes);
    shared_ = map_or_throw(config.slot_pages * page_bytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, "mmap shared backing");
    bind_slot(config.base_gpa, config.slot_pages, config.gmem_offset_bytes);
    create_vcpu();
}

Vm::Vm(const UserMemory& slot1)
{
    create_vm();
    create_slot0();
    kvm_userspace_memory_region region{};
    region.slot = gmem_slot;
    region.guest_phys_addr = slot1.gpa;
    region.memory_size = slot1.npages * page_bytes;
    region.userspace_addr = reinterpret_cast<std::uint64_t>(slot1.addr);
    xioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION (slot 1)");
    slot_bound_ = true;
    base_gpa_ = slot1.gpa;
    slot_pages_ = slot1.npages;
    create_vcpu();
}

int Vm::create_unbound_gmem(std::uint64_t size_bytes)
{
    uapi::kvm_create_guest_memfd args{};
    args.size = size_bytes;
    int fd = ::ioctl(vm_.get(), uapi::kvm_create_guest_memfd_ioctl, &args);
    if (fd < 0)
        return -errno;
    gmem_ = Fd(fd);
    struct stat st {};
    if (::fstat(fd, &st) == 0)
        gmem_ino_ = st.st_ino;
    return 0;
}

void Vm::delete_user_slot()
{
    kvm_userspace_memory_region region{};
    region.slot = gmem_slot;
    region.guest_phys_addr = base_gpa_;
    xioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION (delete slot 1)");
    slot_bound_ = false;
}

void Vm::create_vm(unsigned long type)
{
    int kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        throw_errno(errno, "open /dev/kvm");
    kvm_ = Fd(kvm);
    if (type != uapi::kvm_x86_default_vm) {
        // KVM_CAP_VM_TYPES (6.8) is a mask of the types KVM_CREATE_VM takes.
        int types = ::ioctl(kvm, KVM_CHECK_EXTENSION, uapi::kvm_cap_vm_types);
        if (types <= 0 || !(static_cast<unsigned long>(types) & (1ul << type)))
            throw std::runtime_error(
                "this kernel has no VM type " + std::to_string(type) +
                (type == uapi::kvm_x86_sw_protected_vm ? " (KVM_X86_SW_PROTECTED_VM)" : "") +
                ": KVM_CAP_VM_TYPES is " + (types < 0 ? "unknown" : hex(static_cast<std::uint64_t>(types))) +
                "; private memory without SEV/TDX needs CONFIG_KVM_SW_PROTECTED_VM=y "
                "(the VM lane's `conversion` kernel, tests/vm/build-kernel.sh)");
    }
    vm_ = Fd(xioctl(kvm_.get(), KVM_CREATE_VM, type, "KVM_CREATE_VM"));
}

void Vm::create_slot0()
{
    slot0_ = map_or_throw(slot0_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                          "mmap slot 0");
    build_page_tables(slot0_.addr());
    std::memcpy(slot0_.addr() + code_gpa, guest_code.data(), guest_code.size());

    kvm_userspace_memory_region region{};
    region.slot = slot0_id;
    region.guest_phys_addr = 0;
    region.memory_size = slot0_bytes;
    region.userspace_addr = reinterpret_cast<std::uint64_t>(slot0_.addr());
    xioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION (slot 0)");
}

void Vm::create_gmem(std::uint64_t size_bytes)
{
    uapi::kvm_create_guest_memfd args{};
    args.size = size_bytes;
    // MMAP makes the memslot gmem-only (faults come from gmem, not from
    // userspace_addr); INIT_SHARED lets the host mmap() and fault it.
    args.flags = uapi::guest_memfd_flag_mmap | uapi::guest_memfd_flag_init_shared;
    gmem_ = Fd(xioctl(vm_.get(), uapi::kvm_create_guest_memfd_ioctl, &args,
                      "KVM_CREATE_GUEST_MEMFD"));

    struct stat st {};
    if (::fstat(gmem_.get(), &st) < 0)
        throw_errno(errno, "fstat gmem fd");
    gmem_ino_ = st.st_ino;
    gmem_map_ = map_or_throw(size_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, gmem_.get(),
                             "mmap gmem fd");
    gmem_size_bytes_ = size_bytes;
}

void Vm::create_private_gmem(std::uint64_t size_bytes)
{
    uapi::kvm_create_guest_memfd args{};
    args.size = size_bytes;
    gmem_ = Fd(xioctl(vm_.get(), uapi::kvm_create_guest_memfd_ioctl, &args,
                      "KVM_CREATE_GUEST_MEMFD"));
    struct stat st {};
    if (::fstat(gmem_.get(), &st) < 0)
        throw_errno(errno, "fstat gmem fd");
    gmem_ino_ = st.st_ino;
    gmem_size_bytes_ = size_bytes;
}

void Vm::create_vcpu()
{
    vcpu_ = Fd(xioctl(vm_.get(), KVM_CREATE_VCPU, 0UL, "KVM_CREATE_VCPU"));
    int run_bytes = xioctl(kvm_.get(), KVM_GET_VCPU_MMAP_SIZE, 0UL, "KVM_GET_VCPU_MMAP_SIZE");
    run_ = map_or_throw(static_cast<std::size_t>(run_bytes), PROT_READ | PROT_WRITE, MAP_SHARED,
                        vcpu_.get(), "mmap kvm_run");

    // Without the host's CPUID (long mode in particular) KVM refuses
    // EFER.LME in KVM_SET_SREGS.
    // E2BIG means nent was too small.
    std::vector<std::byte> buf;
    for (std::uint32_t nent = 64;; nent *= 2) {
        buf.assign(sizeof(uapi::kvm_cpuid2) + nent * uapi::kvm_cpuid_entry2_bytes, std::byte{});
        uapi::kvm_cpuid2 header{nent, 0};
        std::memcpy(buf.data(), &header, sizeof(header));
        if (::ioctl(kvm_.get(), uapi::kvm_get_supported_cpuid_ioctl, buf.data()) == 0)
            break;
        if (errno != E2BIG || nent >= 4096)
            throw_errno(errno, "KVM_GET_SUPPORTED_CPUID");
    }
    xioctl(vcpu_.get(), uapi::kvm_set_cpuid2_ioctl, buf.data(), "KVM_SET_CPUID2");

    kvm_sregs sregs{};
    xioctl(vcpu_.get(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
    sregs.cr0 = 0x80050033;  // PG WP AM NE ET MP PE
    sregs.cr4 = 0x20;        // PAE
    sregs.efer = 0x500;      // LME LMA
    sregs.cr3 = pml4_gpa;
    sregs.cs = user_segment(0x33, 0xb, true);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = user_segment(0x2b, 0x3, false);
    xioctl(vcpu_.get(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
}

void Vm::set_region(std::uint64_t gpa, std::uint64_t size_bytes, std::uint64_t gmem_offset_bytes)
{
    uapi::kvm_userspace_memory_region2 region{};
    region.slot = gmem_slot;
    region.guest_phys_addr = gpa;
    region.memory_size = size_bytes;
    if (size_bytes != 0) {
        region.flags = uapi::kvm_mem_guest_memfd;
        // A private VM's shared pages come from its own buffer; a gmem-only
        // slot's userspace_addr follows the gmem offset in the gmem mmap.
        std::byte* shared = shared_.addr() ? shared_.addr() : gmem_map_.addr() + gmem_offset_bytes;
        region.userspace_addr = reinterpret_cast<std::uint64_t>(shared);
        region.guest_memfd = static_cast<std::uint32_t>(gmem_.get());
        region.guest_memfd_offset = gmem_offset_bytes;
    }
    const char* what = size_bytes ? "KVM_SET_USER_MEMORY_REGION2 (bind gmem slot)"
                                  : "KVM_SET_USER_MEMORY_REGION2 (delete gmem slot)";
    xioctl(vm_.get(), uapi::kvm_set_user_memory_region2_ioctl, &region, what);
}

void Vm::bind_slot(std::uint64_t gpa, std::uint64_t npages, std::uint64_t gmem_offset_bytes)
{
    // Slot 0 and the identity map bound where the guest can reach.
    if (gpa < slot0_bytes || gpa + npages * page_bytes > mapped_gib * gib_bytes)
        throw std::invalid_argument("gmem slot gpa " + hex(gpa) + " + " + std::to_string(npages) +
                                    " pages is outside " + hex(slot0_bytes) + ".." +
                                    hex(mapped_gib * gib_bytes));
    if (gmem_offset_bytes > gmem_size_bytes_)
        throw std::invalid_argument("gmem offset " + hex(gmem_offset_bytes) +
                                    " is past the gmem file");
    if (shared_.addr() && npages * page_bytes > shared_.len_bytes())
        throw std::invalid_argument(std::to_string(npages) + " pages exceed the shared backing");
    set_region(gpa, npages * page_bytes, gmem_offset_bytes);
    slot_bound_ = true;
    base_gpa_ = gpa;
    slot_pages_ = npages;
    gmem_offset_bytes_ = gmem_offset_bytes;
}

void Vm::delete_slot()
{
    set_region(base_gpa_, 0, 0);
    slot_bound_ = false;
}

void Vm::close_gmem()
{
    if (slot_bound_)
        delete_slot();
    // munmap first: the mapping holds a file reference, and the gmem inode
    // (with its page cache) is released only with the last one.
    gmem_map_.reset();
    gmem_.reset();
    gmem_size_bytes_ = 0;
}

std::span<std::byte> Vm::gmem_mapping() const
{
    return {gmem_map_.addr(), gmem_map_.len_bytes()};
}

int Vm::punch(std::uint64_t offset_bytes, std::uint64_t len_bytes)
{
    // kvm_gmem_fallocate() accepts only PUNCH_HOLE|KEEP_SIZE or allocate.
    int ret = ::fallocate(gmem_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(offset_bytes), static_cast<off_t>(len_bytes));
    return ret < 0 ? -errno : 0;
}

int Vm::check_extension(long cap) const
{
    int ret = ::ioctl(vm_.get(), KVM_CHECK_EXTENSION, cap);
    return ret < 0 ? -errno : ret;
}

ConvertAnswer Vm::convert(ConvertKind kind, std::uint64_t start, std::uint64_t size_bytes,
                          bool to_private)
{
    ConvertAnswer answer;
    answer.kind = kind;
    answer.to_private = to_private;
    int ret = 0;
    switch (kind) {
    case ConvertKind::vm_attributes: {
        uapi::kvm_memory_attributes args{start, size_bytes,
                                         to_private ? uapi::kvm_memory_attribute_private : 0, 0};
        ret = ::ioctl(vm_.get(), uapi::kvm_set_memory_attributes_ioctl, &args);
        break;
    }
    case ConvertKind::gmem_attributes2: {
        uapi::kvm_memory_attributes2 args{};
        args.offset = start;
        args.size = size_bytes;
        args.attributes = to_private ? uapi::kvm_memory_attribute_private : 0;
        ret = ::ioctl(gmem_.get(), uapi::kvm_set_memory_attributes2_ioctl, &args);
        answer.error_offset = args.error_offset;
        break;
    }
    case ConvertKind::gmem_convert: {
        uapi::kvm_gmem_convert args{};
        args.offset = start;
        args.size = size_bytes;
        unsigned long request = to_private ? uapi::kvm_gmem_convert_private_ioctl
                                           : uapi::kvm_gmem_convert_shared_ioctl;
        ret = ::ioctl(gmem_.get(), request, &args);
        answer.error_offset = args.error_offset;
        break;
    }
    }
    answer.error = ret < 0 ? errno : 0;
    return answer;
}

void Vm::touch(std::uint64_t first_page, std::uint64_t npages)
{
    if (npages == 0)
        return;  // the guest loop runs at least once
    if (first_page + npages > slot_pages_)
        throw std::out_of_range("touch pages " + std::to_string(first_page) + "+" +
                                std::to_string(npages) + " past the slot's " +
                                std::to_string(slot_pages_) + " pages");
    run_guest(base_gpa_ + first_page * page_bytes, npages);
}

void Vm::run_guest(std::uint64_t gpa, std::uint64_t npages)
{
    kvm_regs regs{};
    regs.rip = code_gpa;
    regs.rflags = guest_rflags;
    regs.rdi = gpa;
    regs.rcx = npages;
    xioctl(vcpu_.get(), KVM_SET_REGS, &regs, "KVM_SET_REGS");

    exit_once();
}

void Vm::exit_once()
{
    auto* run = reinterpret_cast<kvm_run*>(run_.addr());
    while (::ioctl(vcpu_.get(), KVM_RUN, 0UL) < 0) {
        if (errno != EINTR && errno != EAGAIN)
            throw_errno(errno, "KVM_RUN");
    }
    bool done = run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT &&
                run->io.port == exit_port;
    if (!done)
        throw std::runtime_error("guest did not reach its out: " + describe_exit());
}

std::string Vm::describe_exit() const
{
    const auto* run = reinterpret_cast<const kvm_run*>(run_.addr());
    std::string text = exit_reason_name(run->exit_reason);
    switch (run->exit_reason) {
    case KVM_EXIT_FAIL_ENTRY:
        text += " hardware_entry_failure_reason=" +
                hex(run->fail_entry.hardware_entry_failure_reason);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        text += " suberror=" + std::to_string(run->internal.suberror);
        break;
    case KVM_EXIT_MMIO:
        text += " phys_addr=" + hex(run->mmio.phys_addr) +
                (run->mmio.is_write ? " write" : " read");
        break;
    case KVM_EXIT_IO:
        text += " port=" + hex(run->io.port);
        break;
    case uapi::kvm_exit_memory_fault: {
        uapi::kvm_memory_fault_exit fault{};
        std::memcpy(&fault, &run->mmio, sizeof(fault));  // the exit union
        text += " gpa=" + hex(fault.gpa) + " size=" + hex(fault.size) +
                " flags=" + hex(fault.flags);
        break;
    }
    default:
        break;
    }
    kvm_regs regs{};
    if (::ioctl(vcpu_.get(), KVM_GET_REGS, &regs) == 0)
        text += " rip=" + hex(regs.rip) + " rdi=" + hex(regs.rdi) + " rcx=" + hex(regs.rcx) +
                " rflags=" + hex(regs.rflags);
    return text;
}

// --- Scenarios --------------------------------------------------------------

namespace {

// Per-step log lines from any thread; lives for one run().
class Log {
public:
    explicit Log(std::ostream* out) : out_(out) {}
    void line(const std::string& text)
    {
        if (!out_)
            return;
        std::lock_guard lock(mutex_);
        *out_ << text << '\n';
    }

private:
    std::ostream* out_;
    std::mutex mutex_;
};

struct Counters {
    std::uint64_t ops = 0;
    std::uint64_t pages_touched = 0;
    std::uint64_t punches = 0;
    std::uint64_t rebinds = 0;
    std::uint64_t vcpu_runs = 0;

    void add(const Counters& other)
    {
        ops += other.ops;
        pages_touched += other.pages_touched;
        punches += other.punches;
        rebinds += other.rebinds;
        vcpu_runs += other.vcpu_runs;
    }
};

std::uint64_t elapsed_ns(Clock::time_point start)
{
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
}

std::uint64_t slot_pages_for(const Scenario& s)
{
    switch (s.kind) {
    case ScenarioKind::punch_storm:
    case ScenarioKind::punch_empty:
        return s.range_pages;
    default:
        return s.pages;
    }
}

std::uint64_t gmem_bytes_needed(const Scenario& s)
{
    std::uint64_t slot_bytes = slot_pages_for(s) * page_bytes;
    std::uint64_t needed = s.gmem_offset_bytes + slot_bytes;
    if (s.kind == ScenarioKind::rebind || s.kind == ScenarioKind::churn)
        needed = std::max(needed, s.rebind_offset_bytes + slot_bytes);
    return needed;
}

VmConfig vm_config(const Scenario& s)
{
    VmConfig config;
    config.slot_pages = slot_pages_for(s);
    config.gmem_offset_bytes = s.gmem_offset_bytes;
    config.base_gpa = s.base_gpa;
    config.gmem_size_bytes = s.gmem_size_bytes ? s.gmem_size_bytes : gmem_bytes_needed(s);
    return config;
}

std::string describe_vm(const Vm& vm)
{
    return "gmem ino " + std::to_string(vm.gmem_ino()) + " slot " +
           std::to_string(Vm::gmem_slot) + " gpa " + hex(vm.base_gpa()) + " gfn " +
           hex(vm.base_gfn()) + " pages " + std::to_string(vm.slot_pages()) + " pgoff " +
           hex(vm.gmem_pgoff());
}

void validate(const Scenario& s)
{
    auto require = [](bool ok, const std::string& what) {
        if (!ok)
            throw std::invalid_argument(what);
    };
    bool storm = s.kind == ScenarioKind::punch_storm || s.kind == ScenarioKind::punch_empty;
    require(s.threads >= 1 && s.vms >= 1, "threads and vms must be at least 1");
    require(slot_pages_for(s) >= 1, storm ? "range_pages must be at least 1"
                                          : "pages must be at least 1");
    require(s.gmem_offset_bytes % page_bytes == 0 && s.rebind_offset_bytes % page_bytes == 0,
            "gmem_offset and rebind_offset must be multiples of 4096");
    require(!s.gmem_size_bytes || s.gmem_size_bytes >= gmem_bytes_needed(s),
            "gmem_size " + hex(s.gmem_size_bytes) + " is smaller than the " +
                hex(gmem_bytes_needed(s)) + " bytes the slot offsets need");
    if (storm)
        require(s.punch_pages >= 1 && s.punch_pages <= s.range_pages,
                "punch_pages must be 1..range_pages");
    if (s.kind == ScenarioKind::rebind)
        require(s.punch_pages <= s.pages, "punch_pages must not exceed pages");
    if (s.kind == ScenarioKind::private_memory) {
        require(s.private_pages >= 1 && s.private_pages <= s.pages, "private_pages must be 1..pages");
        require(s.punch_pages <= s.private_pages, "punch_pages must not exceed private_pages");
        require(s.iova % page_bytes == 0, "iova must be a multiple of 4096");
        require(s.poison <= 1, "poison must be 0 or 1");
    }
}

// How many ops one thread does, when it stops, and how fast it may go.
struct Budget {
    std::uint64_t count = 0;  // 0: unlimited
    std::uint64_t duration_ns = 0;  // 0: unlimited
    double rate_per_s = 0;  // 0: unlimited
};

Budget thread_budget(const Scenario& s, unsigned thread)
{
    Budget budget;
    if (s.count) {
        budget.count = s.count / s.threads + (thread < s.count % s.threads ? 1 : 0);
    }
    std::uint64_t duration_ms = s.duration_ms;
    if (!s.count && !duration_ms)
        duration_ms = 1000;
    budget.duration_ns = duration_ms * 1'000'000;
    budget.rate_per_s = static_cast<double>(s.rate) / s.threads;
    return budget;
}

// Calls op(i) until the budget is spent; returns how many ops ran.
template <typename Op>
std::uint64_t run_ops(const Budget& budget, Clock::time_point start, Op&& op)
{
    std::uint64_t i = 0;
    for (;; ++i) {
        if (budget.count && i >= budget.count)
            break;
        // Reading the clock every op would cost a few percent at 1M ops/s.
        bool check_clock = budget.rate_per_s > 0 || (i % 16) == 0;
        if (budget.duration_ns && check_clock && elapsed_ns(start) >= budget.duration_ns)
            break;
        if (budget.rate_per_s > 0) {
            auto due = start + std::chrono::nanoseconds(
                                   static_cast<std::int64_t>(1e9 * static_cast<double>(i) /
                                                             budget.rate_per_s));
            std::this_thread::sleep_until(due);
        }
        op(i);
    }
    return i;
}

// One thread of a threaded scenario: owns its VMs and its counters.
struct Worker {
    std::vector<Vm> vms;
    Counters counters;
    std::exception_ptr error;
};

void storm_op(const Scenario& s, Worker& w, std::uint64_t i, bool faulting)
{
    std::uint64_t chunks = (s.range_pages + s.punch_pages - 1) / s.punch_pages;
    std::uint64_t chunk = i % chunks;
    Vm& vm = w.vms[(i / chunks) % w.vms.size()];
    // Each round over the range starts by faulting it all back in, so
    // every punch of a faulting storm frees resident gmem pages.
    if (faulting && chunk == 0) {
        vm.touch(0, s.range_pages);
        w.counters.pages_touched += s.range_pages;
        ++w.counters.vcpu_runs;
    }
    std::uint64_t first_page = chunk * s.punch_pages;
    std::uint64_t npages = std::min(s.punch_pages, s.range_pages - first_page);
    int ret = vm.punch(vm.gmem_offset_bytes() + first_page * page_bytes, npages * page_bytes);
    if (ret < 0)
        throw_errno(-ret, "fallocate(PUNCH_HOLE) on gmem fd");
    ++w.counters.punches;
}

void churn_op(const Scenario& s, Worker& w, std::uint64_t i)
{
    Vm& vm = w.vms[i % w.vms.size()];
    std::uint64_t round = i / w.vms.size();
    std::uint64_t offset = round % 2 ? s.gmem_offset_bytes : s.rebind_offset_bytes;
    vm.delete_slot();
    vm.bind_slot(s.base_gpa, s.pages, offset);
    ++w.counters.rebinds;
    vm.touch(0, s.pages);
    w.counters.pages_touched += s.pages;
    ++w.counters.vcpu_runs;
}

void exits_op(Worker& w)
{
    w.vms.front().exit_once();
    ++w.counters.vcpu_runs;
}

void worker_op(const Scenario& s, Worker& w, std::uint64_t i)
{
    switch (s.kind) {
    case ScenarioKind::punch_storm: storm_op(s, w, i, true); break;
    case ScenarioKind::punch_empty: storm_op(s, w, i, false); break;
    case ScenarioKind::churn: churn_op(s, w, i); break;
    case ScenarioKind::exits: exits_op(w); break;
    default: throw std::logic_error("not a threaded scenario");
    }
}

// Keeps the caller's VMs alive for hold_ms, saying so first.
void hold(const Scenario& s, Log& log)
{
    if (!s.hold_ms)
        return;
    log.line(std::string(to_string(s.kind)) + ": holding for " + std::to_string(s.hold_ms) + " ms");
    std::this_thread::sleep_for(std::chrono::milliseconds(s.hold_ms));
}

// Completion step of the start barrier: stamps the start once every VM is
// built, so set-up is not timed.
struct StampStart {
    Clock::time_point* start;
    void operator()() noexcept { *start = Clock::now(); }
};
using StartBarrier = std::barrier<StampStart>;

void worker_main(const Scenario& s, Worker& w, unsigned thread, StartBarrier& ready,
                 Clock::time_point& start, Log& log)
{
    try {
        for (unsigned v = 0; v < s.vms; ++v) {
            w.vms.emplace_back(vm_config(s));
            if (s.kind == ScenarioKind::exits)
                w.vms.back().touch(0, 1);   // the guest then loops on its `out`
            log.line(std::string(to_string(s.kind)) + ": thread " + std::to_string(thread) +
                     " vm " + std::to_string(v) + " " + describe_vm(w.vms.back()));
        }
    } catch (...) {
        w.error = std::current_exception();
        ready.arrive_and_drop();
        return;
    }
    ready.arrive_and_wait();
    try {
        w.counters.ops = run_ops(thread_budget(s, thread), start,
                                 [&](std::uint64_t i) { worker_op(s, w, i); });
    } catch (...) {
        w.error = std::current_exception();
    }
}

Result run_threaded(const Scenario& s, Log& log)
{
    std::vector<Worker> workers(s.threads);
    Clock::time_point start;
    StartBarrier ready(static_cast<std::ptrdiff_t>(s.threads), StampStart{&start});
    {
        std::vector<std::jthread> threads;
        for (unsigned t = 0; t < s.threads; ++t)
            threads.emplace_back([&, t] { worker_main(s, workers[t], t, ready, start, log); });
    }
    Result result;
    result.kind = s.kind;
    result.elapsed_ns = elapsed_ns(start);
    Counters total;
    for (auto& w : workers) {
        if (w.error)
            std::rethrow_exception(w.error);
        total.add(w.counters);
    }
    result.ops = total.ops;
    result.pages_touched = total.pages_touched;
    result.punches = total.punches;
    result.rebinds = total.rebinds;
    result.vcpu_runs = total.vcpu_runs;
    result.gmem_ino = workers.front().vms.front().gmem_ino();
    hold(s, log);
    return result;
}

Result run_fault(const Scenario& s, Log& log)
{
    Vm vm(vm_config(s));
    log.line("fault: " + describe_vm(vm));
    Result result;
    result.kind = s.kind;
    result.gmem_ino = vm.gmem_ino();
    auto start = Clock::now();
    vm.touch(0, s.pages);
    result.elapsed_ns = elapsed_ns(start);
    result.ops = result.pages_touched = s.pages;
    result.vcpu_runs = 1;
    hold(s, log);
    return result;
}

// The sequence tests trace: fault, punch k pages (one fallocate each),
// delete the memslot, rebind at another gmem offset, fault, close gmem.
Result run_rebind(const Scenario& s, Log& log)
{
    Vm vm(vm_config(s));
    Result result;
    result.kind = s.kind;
    result.gmem_ino = vm.gmem_ino();
    auto start = Clock::now();

    log.line("rebind: bound " + describe_vm(vm));
    vm.touch(0, s.pages);
    log.line("rebind: touched " + std::to_string(s.pages) + " pages from gfn " + hex(vm.base_gfn()));
    for (std::uint64_t page = 0; page < s.punch_pages; ++page) {
        std::uint64_t offset = vm.gmem_offset_bytes() + page * page_bytes;
        int ret = vm.punch(offset, page_bytes);
        if (ret < 0)
            throw_errno(-ret, "fallocate(PUNCH_HOLE) on gmem fd");
        log.line("rebind: punched gmem offset " + hex(offset));
    }
    vm.delete_slot();
    log.line("rebind: deleted slot " + std::to_string(Vm::gmem_slot));
    vm.bind_slot(s.base_gpa, s.pages, s.rebind_offset_bytes);
    log.line("rebind: rebound " + describe_vm(vm));
    vm.touch(0, s.pages);
    log.line("rebind: touched " + std::to_string(s.pages) + " pages from gfn " + hex(vm.base_gfn()));
    auto held = Clock::now();
    hold(s, log);
    start += Clock::now() - held;
    vm.close_gmem();
    log.line("rebind: closed gmem ino " + std::to_string(result.gmem_ino));

    result.elapsed_ns = elapsed_ns(start);
    result.ops = result.rebinds = 1;
    result.pages_touched = 2 * s.pages;
    result.punches = s.punch_pages;
    result.vcpu_runs = 2;
    return result;
}

std::string describe_answer(const ConvertAnswer& a)
{
    std::string text = "convert: " + std::string(to_string(a.kind)) +
                       (a.to_private ? " to private: " : " to shared: ") + errno_name(a.error);
    if (a.error)
        text += " (" + std::string(std::strerror(a.error)) + ")";
    if (a.error_offset)
        text += " error_offset " + hex(*a.error_offset);
    return text;
}

Result run_convert(const Scenario& s, Log& log)
{
    Vm vm(vm_config(s));
    log.line("convert: " + describe_vm(vm) + " KVM_CAP_MEMORY_ATTRIBUTES=" +
             std::to_string(vm.check_extension(uapi::kvm_cap_memory_attributes)));
    vm.touch(0, s.pages);
    Result result;
    result.kind = s.kind;
    result.gmem_ino = vm.gmem_ino();
    result.pages_touched = s.pages;
    result.vcpu_runs = 1;
    std::uint64_t size_bytes = s.pages * page_bytes;
    auto start = Clock::now();
    for (auto kind : {ConvertKind::vm_attributes, ConvertKind::gmem_attributes2,
                      ConvertKind::gmem_convert}) {
        std::uint64_t first = kind == ConvertKind::vm_attributes ? vm.base_gpa()
                                                                   : vm.gmem_offset_bytes();
        for (bool to_private : {true, false}) {
            result.conversions.push_back(vm.convert(kind, first, size_bytes, to_private));
            log.line(describe_answer(result.conversions.back()));
        }
    }
    result.elapsed_ns = elapsed_ns(start);
    result.ops = result.conversions.size();
    hold(s, log);
    return result;
}

}  // namespace

double Result::ops_per_s() const
{
    return elapsed_ns ? static_cast<double>(ops) * 1e9 / static_cast<double>(elapsed_ns) : 0.0;
}

Result run(const Scenario& scenario, std::ostream* log_out)
{
    validate(scenario);
    Log log(log_out);
    switch (scenario.kind) {
    case ScenarioKind::fault: return run_fault(scenario, log);
    case ScenarioKind::rebind: return run_rebind(scenario, log);
    case ScenarioKind::convert: return run_convert(scenario, log);
    case ScenarioKind::dma: return run_dma(scenario, log_out);
    case ScenarioKind::private_memory: return run_private(scenario, log_out);
    case ScenarioKind::punch_storm:
    case ScenarioKind::punch_empty:
    case ScenarioKind::churn:
    case ScenarioKind::exits: return run_threaded(scenario, log);
    }
    throw std::logic_error("unknown scenario kind");
}

// --- parse_scenario ---------------------------------------------------------

namespace {

struct ScenarioName {
    std::string_view name;
    ScenarioKind kind;
};

constexpr std::array<ScenarioName, 9> scenario_table = {{
    {"fault", ScenarioKind::fault},
    {"punch-storm", ScenarioKind::punch_storm},
    {"punch-empty", ScenarioKind::punch_empty},
    {"rebind", ScenarioKind::rebind},
    {"churn", ScenarioKind::churn},
    {"convert", ScenarioKind::convert},
    {"dma", ScenarioKind::dma},
    {"private", ScenarioKind::private_memory},
    {"exits", ScenarioKind::exits},
}};

struct Key {
    std::string_view name;
    bool bytes;  // accepts a K/M/G suffix
    void (*set)(Scenario&, std::uint64_t);
};

constexpr std::array<Key, 18> key_table = {{
    {"pages", false, [](Scenario& s, std::uint64_t v) { s.pages = v; }},
    {"punch_pages", false, [](Scenario& s, std::uint64_t v) { s.punch_pages = v; }},
    {"range_pages", false, [](Scenario& s, std::uint64_t v) { s.range_pages = v; }},
    {"count", false, [](Scenario& s, std::uint64_t v) { s.count = v; }},
    {"duration_ms", false, [](Scenario& s, std::uint64_t v) { s.duration_ms = v; }},
    {"rate", false, [](Scenario& s, std::uint64_t v) { s.rate = v; }},
    {"threads", false, [](Scenario& s, std::uint64_t v) { s.threads = static_cast<unsigned>(v); }},
    {"vms", false, [](Scenario& s, std::uint64_t v) { s.vms = static_cast<unsigned>(v); }},
    {"gmem_offset", true, [](Scenario& s, std::uint64_t v) { s.gmem_offset_bytes = v; }},
    {"rebind_offset", true, [](Scenario& s, std::uint64_t v) { s.rebind_offset_bytes = v; }},
    {"gmem_size", true, [](Scenario& s, std::uint64_t v) { s.gmem_size_bytes = v; }},
    {"base_gpa", true, [](Scenario& s, std::uint64_t v) { s.base_gpa = v; }},
    {"hold_ms", false, [](Scenario& s, std::uint64_t v) { s.hold_ms = v; }},
    {"vfio_group", false, [](Scenario& s, std::uint64_t v) { s.vfio_group = v; }},
    {"iova", true, [](Scenario& s, std::uint64_t v) { s.iova = v; }},
    {"private_pages", false, [](Scenario& s, std::uint64_t v) { s.private_pages = v; }},
    {"vfio_device", false, [](Scenario& s, std::uint64_t v) { s.vfio_device = v; }},
    {"poison", false, [](Scenario& s, std::uint64_t v) { s.poison = v; }},
}};

template <typename Table>
std::string join_names(const Table& table)
{
    std::string text;
    for (const auto& entry : table)
        text += (text.empty() ? "" : ", ") + std::string(entry.name);
    return text;
}

std::uint64_t parse_number(std::string_view key, std::string_view text, bool bytes)
{
    auto bad = [&]() {
        return std::invalid_argument("bad value '" + std::string(text) + "' for " +
                                     std::string(key) +
                                     (bytes ? ": want a number, 0x hex, or K/M/G suffix"
                                            : ": want a number or 0x hex"));
    };
    std::string_view digits = text;
    int base = 10;
    if (digits.starts_with("0x") || digits.starts_with("0X")) {
        digits.remove_prefix(2);
        base = 16;
    }
    unsigned shift = 0;
    if (bytes && !digits.empty()) {
        switch (digits.back()) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: break;
        }
        if (shift)
            digits.remove_suffix(1);
    }
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size())
        throw bad();
    if (shift && value > (UINT64_MAX >> shift))
        throw bad();
    return value << shift;
}

const Key& find_key(std::string_view scenario, std::string_view name)
{
    for (const auto& key : key_table)
        if (key.name == name)
            return key;
    throw std::invalid_argument("unknown key '" + std::string(name) + "' for scenario " +
                                std::string(scenario) + "; keys: " + join_names(key_table));
}

}  // namespace

std::string_view to_string(ScenarioKind kind)
{
    for (const auto& entry : scenario_table)
        if (entry.kind == kind)
            return entry.name;
    return "?";
}

Scenario parse_scenario(std::string_view name, std::span<const std::string> settings)
{
    auto it = std::find_if(scenario_table.begin(), scenario_table.end(),
                           [name](const ScenarioName& entry) { return entry.name == name; });
    if (it == scenario_table.end())
        throw std::invalid_argument("unknown scenario '" + std::string(name) +
                                    "'; scenarios: " + join_names(scenario_table));
    Scenario scenario;
    scenario.kind = it->kind;
    for (const auto& setting : settings) {
        auto eq = setting.find('=');
        if (eq == std::string::npos)
            throw std::invalid_argument("setting '" + setting + "' is not key=value");
        std::string_view key_name = std::string_view(setting).substr(0, eq);
        const Key& key = find_key(name, key_name);
        std::uint64_t value = parse_number(key_name, std::string_view(setting).substr(eq + 1),
                                           key.bytes);
        if ((key.name == "threads" || key.name == "vms") && value > 1024)
            throw std::invalid_argument(std::string(key.name) + " must be at most 1024");
        key.set(scenario, value);
    }
    validate(scenario);
    return scenario;
}

std::vector<std::string_view> scenario_names()
{
    std::vector<std::string_view> names;
    for (const auto& entry : scenario_table)
        names.push_back(entry.name);
    return names;
}

std::vector<std::string_view> scenario_keys()
{
    std::vector<std::string_view> names;
    for (const auto& key : key_table)
        names.push_back(key.name);
    return names;
}

}  // namespace gms::workload
