#include "loader/audit/audit.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

extern "C" {
#include "audit.h"
}
// The skeleton embeds the BPF object as one string literal, longer than
// clang's -Wpedantic allows.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverlength-strings"
#include "gmemscope_audit_bpf.skel.h"
#pragma GCC diagnostic pop
#include "loader/base/log.hpp"

namespace gms {

static_assert(sizeof(gms_audit_hdr) == 32);
static_assert(sizeof(gms_audit_vm) == 64);
static_assert(sizeof(gms_audit_vcpu) == 48);
static_assert(sizeof(gms_audit_gmem) == 72);
static_assert(sizeof(gms_audit_memslot) == 112);
static_assert(sizeof(gms_audit_slot_walk) == 56);
static_assert(sizeof(gms_audit_device) == 80);
static_assert(sizeof(gms_audit_vm_file) == 80);

namespace {

namespace fs = std::filesystem;

constexpr uint64_t kAttrPrivate = GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE;
constexpr uint32_t kUserMemslotFlags = 0xffff;  // KVM_MEM_*: the low half; the kernel's own flags above

std::string cstr(const char* s, size_t n) { return {s, strnlen(s, n)}; }

bool all_digits(const std::string& s)
{
    return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

FdRef holder_of(const gms_audit_hdr& h)
{
    return {h.tgid, cstr(h.comm, sizeof(h.comm)), int32_t(h.fd)};
}

// What a VFIO or iommufd fd is, from its dentry name and its parent's
// (the iterator) or from its /proc/PID/fd link (split the same way).
std::optional<AuditDevice> classify_device(const std::string& name, const std::string& parent)
{
    bool number = all_digits(name);
    if (name == "vfio" && parent == "vfio")
        return AuditDevice{"vfio_container", "/dev/vfio/vfio", {}};
    if (parent == "vfio" && number)
        return AuditDevice{"vfio_group", "/dev/vfio/" + name, {}};
    if (parent == "devices" && name.starts_with("vfio"))
        return AuditDevice{"vfio_device", "/dev/vfio/devices/" + name, {}};
    if (name.starts_with("[vfio-device"))
        return AuditDevice{"vfio_device", "anon_inode:" + name, {}};
    if (name == "iommu")
        return AuditDevice{"iommufd", "/dev/iommu", {}};
    return std::nullopt;
}

// Folds records into the report's VMs and gmem files, deduplicated:
// a file shared by processes (fork, SCM_RIGHTS) is one object with
// several holders.
struct Builder {
    std::map<uint64_t, AuditVm> vms;
    std::map<uint64_t, AuditGmem> gmem;
    std::set<std::tuple<uint64_t, uint16_t, uint16_t>> slots_seen;
    std::vector<AuditDevice> devices;

    AuditGmem& gmem_of(uint64_t ino, uint64_t vm)
    {
        AuditGmem& g = gmem[ino];
        g.ino = ino;
        g.vm = vm;
        return g;
    }
    void slot(const gms_audit_memslot& m)
    {
        AuditVm& v = vms[m.vm];
        v.id = m.vm;
        if (!slots_seen.emplace(m.vm, m.as_id, m.id).second)
            return;
        // KVM_MEMSLOT_INVALID (1 << 16) and KVM_MEMSLOT_GMEM_ONLY (1 << 17) are
        // kernel-internal (include/linux/kvm_host.h): show the KVM_MEM_* the ioctl passed.
        AuditSlot s{m.vm, m.as_id, {m.id, m.base_gfn, m.npages, m.flags & kUserMemslotFlags, m.userspace_addr,
                                     m.gmem_ino, m.gmem_pgoff, 0}};
        v.memslots.push_back(s);
        if (!m.gmem_ino)
            return;
        AuditGmem& g = gmem_of(m.gmem_ino, m.vm);
        g.size_bytes = m.gmem_size_bytes;
        g.resident_pages = m.gmem_resident_pages;
        g.flags = m.gmem_flags;
        g.bindings.push_back(s);
    }
    AuditReport finish(AuditReport r)
    {
        for (auto& [id, v] : vms) {
            std::sort(v.vm_fds.begin(), v.vm_fds.end());
            v.vm_fds.erase(std::unique(v.vm_fds.begin(), v.vm_fds.end()), v.vm_fds.end());
            std::sort(v.memslots.begin(), v.memslots.end(), [](const AuditSlot& a, const AuditSlot& b) {
                return std::tie(a.as_id, a.slot.slot) < std::tie(b.as_id, b.slot.slot);
            });
            std::sort(v.vcpus.begin(), v.vcpus.end(),
                      [](const AuditVcpu& a, const AuditVcpu& b) { return a.id < b.id; });
            std::sort(v.files.begin(), v.files.end());
            v.files.erase(std::unique(v.files.begin(), v.files.end()), v.files.end());
            r.vms.push_back(std::move(v));
        }
        for (auto& [ino, g] : gmem) {
            std::sort(g.holders.begin(), g.holders.end());
            g.holders.erase(std::unique(g.holders.begin(), g.holders.end()), g.holders.end());
            r.gmem.push_back(std::move(g));
        }
        r.devices = std::move(devices);
        return r;
    }
};

template <typename T>
bool take(const std::string& buf, size_t off, T& out)
{
    if (off + sizeof(T) > buf.size())
        return false;
    std::memcpy(&out, buf.data() + off, sizeof(T));
    return true;
}

std::string read_text(const fs::path& p)
{
    std::ifstream in(p);
    std::string s;
    std::getline(in, s);
    return s;
}

// A /proc/PID/fd link's kind if it is a stats file or a KVM device (the
// names gms_fd_kind() tells apart in bpf/files.bpf.h).
std::optional<std::string> vm_file_kind(const std::string& target)
{
    if (target == "anon_inode:kvm-vm-stats")
        return std::string(fd_kind_name(GMS_FD_VM_STATS));
    if (target.starts_with("anon_inode:kvm-vcpu-stats:"))
        return std::string(fd_kind_name(GMS_FD_VCPU_STATS));
    if (target.starts_with("anon_inode:kvm-") && !target.starts_with("anon_inode:kvm-vm") &&
        !target.starts_with("anon_inode:kvm-vcpu"))
        return std::string(fd_kind_name(GMS_FD_KVM_DEVICE));
    return std::nullopt;
}

// The fallback: every /proc/PID/fd link.  Sees which processes hold VM,
// vCPU, gmem, VFIO and iommufd fds and each gmem file's inode and size,
// nothing behind them.
void read_procfs(Builder& b)
{
    std::error_code ec;
    std::map<uint32_t, std::vector<AuditVcpu>> vcpus_of;   // tgid -> vCPUs, placed after all VMs
    std::map<uint32_t, std::vector<AuditVmFile>> files_of; // tgid -> stats files and KVM devices, likewise
    std::map<uint32_t, uint64_t> vm_of;                     // tgid -> key of its first VM fd
    uint64_t next_key = 1;
    for (const auto& pid_dir : fs::directory_iterator("/proc", ec)) {
        std::string pid = pid_dir.path().filename();
        if (!all_digits(pid))
            continue;
        uint32_t tgid = uint32_t(std::stoul(pid));
        std::string comm = read_text(pid_dir.path() / "comm");
        std::error_code fd_ec;
        for (const auto& fd_link : fs::directory_iterator(pid_dir.path() / "fd", fd_ec)) {
            std::error_code link_ec;
            std::string target = fs::read_symlink(fd_link.path(), link_ec);
            if (link_ec)
                continue;
            FdRef ref{tgid, comm, int32_t(std::stol(fd_link.path().filename()))};
            if (target == "anon_inode:kvm-vm") {
                // No kernel address here: each VM fd is its own VM.
                uint64_t key = next_key++;
                AuditVm& v = b.vms[key];
                v.vm_fds.push_back(ref);
                vm_of.emplace(tgid, key);
            } else if (target.starts_with("anon_inode:kvm-vcpu:")) {
                vcpus_of[tgid].push_back({uint32_t(std::stoul(target.substr(20))), ref});
            } else if (auto kind = vm_file_kind(target)) {
                files_of[tgid].push_back({ref, *kind, target.substr(11)});
            } else if (target == "anon_inode:[kvm-gmem]") {
                struct stat st {};
                if (stat(fd_link.path().c_str(), &st) != 0)
                    continue;
                AuditGmem& g = b.gmem_of(st.st_ino, 0);
                g.size_bytes = uint64_t(st.st_size);
                g.holders.push_back(ref);
            } else {
                std::string name = target.starts_with("anon_inode:") ? target.substr(11)
                                                                     : fs::path(target).filename().string();
                std::string parent = fs::path(target).parent_path().filename();
                auto d = classify_device(name, parent);
                struct stat st {};
                // As the iterator: a named VFIO or iommufd file is a character device.
                if (d && !target.starts_with("anon_inode:") &&
                    (stat(fd_link.path().c_str(), &st) != 0 || !S_ISCHR(st.st_mode)))
                    d.reset();
                if (d) {
                    d->holder = ref;
                    b.devices.push_back(*d);
                }
            }
        }
    }
    // A process's vCPUs, stats files and devices go with its first VM fd.
    auto vm_key = [&](uint32_t tgid) {
        auto [it, fresh] = vm_of.try_emplace(tgid, next_key);
        next_key += fresh;
        return it->second;
    };
    for (auto& [tgid, vcpus] : vcpus_of) {
        auto& v = b.vms[vm_key(tgid)].vcpus;
        v.insert(v.end(), vcpus.begin(), vcpus.end());
    }
    for (auto& [tgid, files] : files_of) {
        auto& f = b.vms[vm_key(tgid)].files;
        f.insert(f.end(), files.begin(), files.end());
    }
}

std::string owner_text(const std::vector<FdRef>& refs)
{
    if (refs.empty())
        return "no process";
    std::string s;
    for (const auto& r : refs)
        s += fmt::format("{}{}/{} fd {}", s.empty() ? "" : ", ", r.comm, r.tgid, r.fd);
    return s;
}

}  // namespace

std::string_view severity_name(Severity s)
{
    switch (s) {
    case Severity::info: return "info";
    case Severity::warning: return "warning";
    case Severity::error: return "error";
    case Severity::critical: return "critical";
    }
    return "?";
}

uint64_t AuditReport::memslot_count() const
{
    uint64_t n = 0;
    for (const auto& v : vms)
        n += v.memslots.size();
    return n;
}

uint64_t AuditReport::resident_pages() const
{
    uint64_t n = 0;
    for (const auto& g : gmem)
        n += g.resident_pages;
    return n;
}

Auditor::Auditor(const Features* features, bool force_procfs, uint32_t slot_ringbuf_bytes)
{
    if (force_procfs) {
        fallback_ = "asked for /proc (--procfs)";
        return;
    }
    if (!features || !features->loads(ProgKind::iter)) {
        fallback_ = features ? "this kernel refuses BPF iterators: " + features->load(ProgKind::iter).detail
                             : "BPF is not usable here (no privileges)";
        return;
    }
    // The attributes pass is a program of its own: a kernel refusing it
    // still gets the rest of the audit, loaded without it.
    int err = 0;
    for (bool with_attrs : {true, false}) {
        gmemscope_audit_bpf__destroy(skel_);
        skel_ = gmemscope_audit_bpf__open();
        if (!skel_) {
            fallback_ = fmt::format("opening the audit BPF object: {}", strerror(errno));
            return;
        }
        if (slot_ringbuf_bytes)
            bpf_map__set_max_entries(skel_->maps.audit_slots, slot_ringbuf_bytes);
        bpf_program__set_autoload(skel_->progs.audit_attrs, with_attrs);
        err = gmemscope_audit_bpf__load(skel_);
        if (!err)
            break;
        if (with_attrs)
            attrs_refused_ =
                fmt::format("its iterator was refused: {} (run with -v for the verifier log)", strerror(-err));
    }
    if (err) {
        fallback_ = fmt::format("loading the audit iterator: {} (run with -v for the verifier log)", strerror(-err));
    } else {
        link_ = bpf_program__attach_iter(skel_->progs.audit_task_file, nullptr);
        if (!link_)
            fallback_ = fmt::format("attaching iter/task_file: {}", strerror(errno));
        else if (attrs_refused_.empty() && !(attrs_link_ = bpf_program__attach_iter(skel_->progs.audit_attrs, nullptr)))
            attrs_refused_ = fmt::format("attaching its iterator: {}", strerror(errno));
    }
    if (!fallback_.empty()) {
        gmemscope_audit_bpf__destroy(skel_);
        skel_ = nullptr;
    }
}

Auditor::~Auditor()
{
    bpf_link__destroy(attrs_link_);
    bpf_link__destroy(link_);
    gmemscope_audit_bpf__destroy(skel_);
}

void Auditor::read_iterator(AuditReport& r) const
{
    Builder b;
    // Memslots come through the ring buffer, drained after each chunk of
    // the seq_file so that it holds at most the VMs of one chunk.
    auto on_slot = [](void* ctx, void* data, size_t size) {
        gms_audit_hdr h{};
        gms_audit_memslot m{};
        gms_audit_attrs a{};
        auto* builder = static_cast<Builder*>(ctx);
        if (size >= sizeof(h))
            std::memcpy(&h, data, sizeof(h));
        if (h.kind == GMS_AUDIT_MEMSLOT && size >= sizeof(m)) {
            std::memcpy(&m, data, sizeof(m));
            builder->slot(m);
        } else if (h.kind == GMS_AUDIT_ATTRS && size >= sizeof(a)) {
            std::memcpy(&a, data, sizeof(a));
            builder->vms[a.vm].attrs.push_back({a.first_gfn, a.end_gfn, a.attributes});
        }
        return 0;
    };
    std::unique_ptr<ring_buffer, decltype(&ring_buffer__free)> rb(
        ring_buffer__new(bpf_map__fd(skel_->maps.audit_slots), on_slot, &b, nullptr), &ring_buffer__free);
    if (!rb)
        throw std::runtime_error(fmt::format("opening the audit ring buffer: {}", strerror(errno)));
    skel_->bss->audit_pass++;
    std::string buf;
    // The main pass, then the attributes pass: their records are alike.
    for (bpf_link* link : {link_, attrs_link_}) {
        if (!link)
            continue;
        int fd = bpf_iter_create(bpf_link__fd(link));
        if (fd < 0)
            throw std::runtime_error(fmt::format("creating the audit iterator: {}", strerror(errno)));
        char chunk[16384];
        ssize_t n;
        while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
            buf.append(chunk, size_t(n));
            ring_buffer__consume(rb.get());
        }
        int err = errno;
        close(fd);
        if (n < 0)
            throw std::runtime_error(fmt::format("reading the audit iterator: {}", strerror(err)));
        ring_buffer__consume(rb.get());
    }

    std::map<uint64_t, std::pair<uint64_t, bool>> walks;   // vm -> memslots lost, walk incomplete
    gms_audit_hdr h{};
    for (size_t off = 0; take(buf, off, h) && h.size >= sizeof(h); off += h.size) {
        switch (h.kind) {
        case GMS_AUDIT_VM: {
            gms_audit_vm v{};
            if (!take(buf, off, v))
                break;
            AuditVm& vm = b.vms[v.vm];
            vm.id = v.vm;
            if (v.vm_fd)
                vm.vm_fds.push_back(holder_of(h));
            vm.created_vcpus = v.created_vcpus;
            vm.online_vcpus = v.online_vcpus;
            vm.nr_memslot_pages = v.nr_memslot_pages;
            break;
        }
        case GMS_AUDIT_VCPU: {
            gms_audit_vcpu c{};
            if (!take(buf, off, c))
                break;
            AuditVm& vm = b.vms[c.vm];
            vm.id = c.vm;
            if (std::none_of(vm.vcpus.begin(), vm.vcpus.end(), [&](const AuditVcpu& x) { return x.id == c.vcpu_id; }))
                vm.vcpus.push_back({c.vcpu_id, holder_of(h)});
            break;
        }
        case GMS_AUDIT_VM_FILE: {
            gms_audit_vm_file f{};
            if (!take(buf, off, f))
                break;
            AuditVm& vm = b.vms[f.vm];
            vm.id = f.vm;
            vm.files.push_back({holder_of(h), std::string(fd_kind_name(f.fd_kind)), cstr(f.name, sizeof(f.name))});
            break;
        }
        case GMS_AUDIT_GMEM: {
            gms_audit_gmem g{};
            if (!take(buf, off, g))
                break;
            AuditGmem& gm = b.gmem_of(g.ino, g.vm);
            gm.size_bytes = g.size_bytes;
            gm.resident_pages = g.resident_pages;
            gm.flags = g.flags;
            gm.holders.push_back(holder_of(h));
            break;
        }
        case GMS_AUDIT_MEMSLOT: {
            gms_audit_memslot m{};
            if (take(buf, off, m))
                b.slot(m);
            break;
        }
        case GMS_AUDIT_SLOT_WALK: {
            gms_audit_slot_walk w{};
            if (take(buf, off, w)) {
                auto& [lost, incomplete] = walks[w.vm];
                lost += w.lost;
                incomplete |= !w.complete;
            }
            break;
        }
        case GMS_AUDIT_ATTRS_WALK: {
            gms_audit_attrs_walk w{};
            if (take(buf, off, w)) {
                AuditVm& v = b.vms[w.vm];
                v.attrs_walked = true;
                v.attrs_read |= w.present != 0;
                v.attrs_incomplete |= w.lost || !w.complete;
            }
            break;
        }
        case GMS_AUDIT_DEVICE: {
            gms_audit_device d{};
            if (!take(buf, off, d))
                break;
            if (auto dev = classify_device(cstr(d.name, sizeof(d.name)), cstr(d.parent, sizeof(d.parent)))) {
                dev->holder = holder_of(h);
                b.devices.push_back(*dev);
            }
            break;
        }
        default:
            log::debug("audit: unknown record kind {} at offset {}", h.kind, off);
        }
    }
    for (const auto& [vm, walk] : walks) {
        AuditVm& v = b.vms[vm];
        v.memslots_lost = walk.first;
        v.walk_incomplete = walk.second;
        v.memslots_truncated = walk.first || walk.second;
    }
    r = b.finish(std::move(r));
}

AuditReport Auditor::run(const Engine* recording, const std::string& recording_path) const
{
    AuditReport r;
    r.recording = recording_path;
    if (skel_) {
        r.source = "iterator";
        read_iterator(r);
        r.unseen.push_back("inside VFIO and iommufd fds (containers' DMA mappings, groups' devices, IOAS and "
                           "pinned pages): gmemscope names these fds and does not walk their objects");
        if (!attrs_refused_.empty())
            r.unseen.push_back("shared/private attributes: " + attrs_refused_);
        else if (std::any_of(r.vms.begin(), r.vms.end(), [](const AuditVm& v) { return v.attrs_walked && !v.attrs_read; }))
            r.unseen.push_back("shared/private attributes: this kernel keeps none per VM (no kvm->mem_attr_array, "
                               "CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES)");
    } else {
        r.source = "procfs";
        Builder b;
        read_procfs(b);
        r = b.finish(std::move(r));
        r.unseen.push_back("BPF iterator not used (" + fallback_ + "): read /proc/*/fd instead");
        r.unseen.push_back("memslots, gmem bindings, resident pages, gmem flags and VM kernel addresses: "
                           "only the iterator reads struct kvm and the gmem inode's page cache");
        r.unseen.push_back("which VM a gmem file or vCPU belongs to (each VM fd is listed as its own VM; "
                           "a process's vCPUs go to its first VM fd)");
    }
    if (!recording)
        r.unseen.push_back("DMA mappings and pins: known only from a recording (-i FILE)");
    else
        for (const auto& [id, v] : recording->vms()) {
            if (v.ended_ns)
                continue;   // that VM is gone: its mappings went with it
            for (auto& p : recording->pins_over(id, 0, UINT64_MAX)) {
                r.dma.push_back(std::move(p));
                r.dma_vms.push_back(v.id);
                r.dma_vm_keys.push_back(id);
            }
        }
    r.findings = find_problems(r, recording);
    return r;
}

std::vector<Finding> find_problems(const AuditReport& r, const Engine* recording)
{
    std::vector<Finding> out;
    std::map<uint64_t, const AuditVm*> vm_by_id;
    for (const auto& v : r.vms)
        vm_by_id[v.id] = &v;
    bool live = r.source == "iterator";
    for (const auto& g : r.gmem) {
        if (live && g.bindings.empty())
            out.push_back({Severity::warning, "gmem_unbound",
                           fmt::format("gmem ino {} ({} KiB, {} pages resident, held by {}) is bound to no memslot "
                                       "of VM {:x}",
                                       g.ino, g.size_bytes >> 10, g.resident_pages, owner_text(g.holders), g.vm),
                           g.vm, g.ino});
        auto v = vm_by_id.find(g.vm);
        if (live && g.resident_pages && (v == vm_by_id.end() || v->second->vm_fds.empty()))
            out.push_back({Severity::warning, "gmem_orphan",
                           fmt::format("gmem ino {} has {} resident pages but no process holds a fd of its VM {:x}: "
                                       "the VM lives on only through its gmem or vCPU files",
                                       g.ino, g.resident_pages, g.vm),
                           g.vm, g.ino});
        if (live && g.holders.empty())
            out.push_back({Severity::info, "gmem_no_fd",
                           fmt::format("gmem ino {} is open in no process: it lives on through its memslot "
                                       "binding ({} pages resident)",
                                       g.ino, g.resident_pages),
                           g.vm, g.ino});
    }
    for (const auto& v : r.vms)
        if (v.memslots_truncated)
            out.push_back({Severity::warning, "memslots_truncated",
                           fmt::format("VM {:x}: {} memslots listed, incomplete: {}{}", v.id, v.memslots.size(),
                                       v.memslots_lost ? fmt::format("{} more were read and lost (the audit's memslot "
                                                                     "ring buffer was full)",
                                                                     v.memslots_lost)
                                                       : "",
                                       v.walk_incomplete ? fmt::format("{}the walk stopped after {} steps",
                                                                       v.memslots_lost ? "; " : "", GMS_AUDIT_WALK_STEPS)
                                                         : ""),
                           v.id, 0});
    if (recording) {
        for (size_t i = 0; i < r.dma.size(); i++) {
            const PinOverlap& p = r.dma[i];
            uint64_t vm = r.dma_vms[i];
            const Vm& ev = recording->vms().at(r.dma_vm_keys[i]);
            bool any_private = false;
            ev.attrs.overlaps(p.first_gfn, p.first_gfn + p.pages, [&](uint64_t s, uint64_t e, uint64_t attrs) {
                if (!(attrs & kAttrPrivate))
                    return;
                any_private = true;
                out.push_back({Severity::critical, "dma_private",
                               fmt::format("gfn [{:#x}, {:#x}) of VM {:x} is private and DMA-mapped by {} ({}/{}) "
                                           "at iova {:#x}",
                                           s, e, vm, to_string(p.space), p.owner.comm, p.owner.tgid,
                                           p.iova + ((s - p.first_gfn) << 12)),
                               vm, 0});
            });
            auto slot = std::find_if(ev.slots.begin(), ev.slots.end(), [&](const auto& kv) {
                return p.first_gfn >= kv.second.base_gfn && p.first_gfn < kv.second.base_gfn + kv.second.npages;
            });
            if (!any_private && slot != ev.slots.end() && slot->second.gmem_ino)
                out.push_back({Severity::warning, "dma_pins_gmem",
                               fmt::format("gfn [{:#x}, {:#x}) of VM {:x} (gmem ino {}) is pinned by {} ({}/{}): "
                                           "a conversion to private fails while the pin lasts",
                                           p.first_gfn, p.first_gfn + p.pages, vm, slot->second.gmem_ino,
                                           to_string(p.space), p.owner.comm, p.owner.tgid),
                               vm, slot->second.gmem_ino});
        }
        for (const auto& x : recording->exposures())
            out.push_back({Severity::critical, "dma_private_converted", recording->describe(x),
                           recording->vms().at(x.vm).id, 0});
        for (const auto& f : recording->failures())
            if (!f.pins.empty())
                out.push_back({Severity::error, "pins_converting",
                               fmt::format("{} pins outstanding on a range being converted: {}", f.pins.size(),
                                           recording->describe(f)),
                               f.vm ? recording->vms().at(f.vm).id : 0, 0});
    }
    std::stable_sort(out.begin(), out.end(),
                     [](const Finding& a, const Finding& b) { return a.severity > b.severity; });
    return out;
}

namespace {

nlohmann::json fd_json(const FdRef& f) { return {{"tgid", f.tgid}, {"comm", f.comm}, {"fd", f.fd}}; }

nlohmann::json fds_json(const std::vector<FdRef>& refs)
{
    nlohmann::json a = nlohmann::json::array();
    for (const auto& f : refs)
        a.push_back(fd_json(f));
    return a;
}

nlohmann::json slot_json(const AuditSlot& s)
{
    nlohmann::json j = {{"vm", fmt::format("{:#x}", s.vm)},
                        {"as_id", s.as_id},
                        {"slot", s.slot.slot},
                        {"base_gfn", fmt::format("{:#x}", s.slot.base_gfn)},
                        {"npages", s.slot.npages},
                        {"flags", s.slot.flags},
                        {"userspace_addr", fmt::format("{:#x}", s.slot.uaddr)}};
    if (s.slot.gmem_ino) {
        j["gmem_ino"] = s.slot.gmem_ino;
        j["gmem_pgoff"] = s.slot.gmem_pgoff;
    }
    return j;
}

std::string vm_text(uint64_t id) { return id ? fmt::format("{:x}", id) : "?"; }

}  // namespace

nlohmann::json to_json(const AuditReport& r)
{
    nlohmann::json vms = nlohmann::json::array(), gmem = nlohmann::json::array(), devs = nlohmann::json::array(),
                   dma = nlohmann::json::array(), findings = nlohmann::json::array();
    for (const auto& v : r.vms) {
        nlohmann::json vcpus = nlohmann::json::array(), slots = nlohmann::json::array();
        nlohmann::json files = nlohmann::json::array();
        for (const auto& c : v.vcpus)
            vcpus.push_back({{"id", c.id}, {"holder", fd_json(c.holder)}});
        for (const auto& f : v.files)
            files.push_back({{"kind", f.kind}, {"name", f.name}, {"holder", fd_json(f.holder)}});
        for (const auto& s : v.memslots)
            slots.push_back(slot_json(s));
        nlohmann::json j = {{"vm_fds", fds_json(v.vm_fds)}, {"vcpus", vcpus}, {"files", files}, {"memslots", slots},
                            {"memslots_truncated", v.memslots_truncated}};
        if (v.id && r.source == "iterator") {
            j["vm"] = fmt::format("{:#x}", v.id);
            j["created_vcpus"] = v.created_vcpus;
            j["online_vcpus"] = v.online_vcpus;
            j["nr_memslot_pages"] = v.nr_memslot_pages;
            j["memslots_lost"] = v.memslots_lost;
            if (v.attrs_read) {
                nlohmann::json attrs = nlohmann::json::array();
                for (const auto& a : v.attrs)
                    attrs.push_back({{"first_gfn", fmt::format("{:#x}", a.first_gfn)},
                                     {"end_gfn", fmt::format("{:#x}", a.end_gfn)}, {"attributes", a.attributes},
                                     {"private", (a.attributes & kAttrPrivate) != 0}});
                j["attributes"] = attrs;
                j["attributes_complete"] = !v.attrs_incomplete;
            }
        }
        vms.push_back(j);
    }
    for (const auto& g : r.gmem) {
        nlohmann::json b = nlohmann::json::array();
        for (const auto& s : g.bindings)
            b.push_back(slot_json(s));
        nlohmann::json j = {{"ino", g.ino}, {"size_bytes", g.size_bytes}, {"holders", fds_json(g.holders)}};
        if (r.source == "iterator") {
            j["vm"] = fmt::format("{:#x}", g.vm);
            j["flags"] = g.flags;
            j["resident_pages"] = g.resident_pages;
            j["bindings"] = b;
        }
        gmem.push_back(j);
    }
    for (const auto& d : r.devices)
        devs.push_back({{"kind", d.kind}, {"path", d.path}, {"holder", fd_json(d.holder)}});
    for (size_t i = 0; i < r.dma.size(); i++) {
        const auto& p = r.dma[i];
        dma.push_back({{"vm", fmt::format("{:#x}", r.dma_vms[i])},
                       {"space", to_string(p.space)},
                       {"tgid", p.owner.tgid},
                       {"comm", p.owner.comm},
                       {"first_gfn", fmt::format("{:#x}", p.first_gfn)},
                       {"pages", p.pages},
                       {"iova", fmt::format("{:#x}", p.iova)}});
    }
    for (const auto& f : r.findings) {
        nlohmann::json j = {{"severity", severity_name(f.severity)}, {"code", f.code}, {"message", f.message}};
        if (f.vm)
            j["vm"] = fmt::format("{:#x}", f.vm);
        if (f.gmem_ino)
            j["gmem_ino"] = f.gmem_ino;
        findings.push_back(j);
    }
    nlohmann::json j = {{"type", "audit"}, {"source", r.source}, {"unseen", r.unseen}, {"vms", vms},
                        {"gmem", gmem},    {"devices", devs},    {"dma", dma},         {"findings", findings}};
    if (!r.recording.empty())
        j["recording"] = r.recording;
    return j;
}

std::string to_text(const AuditReport& r)
{
    std::string out = fmt::format("gmemscope audit ({}): {} VMs, {} memslots, {} gmem files ({} pages resident), "
                                  "{} VFIO/iommufd fds, {} findings\n",
                                  r.source == "iterator" ? "BPF iterator iter/task_file" : "/proc/*/fd", r.vms.size(),
                                  r.memslot_count(), r.gmem.size(), r.resident_pages(), r.devices.size(),
                                  r.findings.size());
    out += fmt::format("\n{:<17} {:<32} {:>6} {:>6}  {:>10}\n", "VM", "VM FDS", "VCPUS", "SLOTS", "PAGES");
    for (const auto& v : r.vms)
        out += fmt::format("{:<17} {:<32} {:>6} {:>6}{} {:>10}\n", vm_text(r.source == "iterator" ? v.id : 0),
                           owner_text(v.vm_fds), v.vcpus.size(), v.memslots.size(), v.memslots_truncated ? "+" : " ",
                           v.nr_memslot_pages);
    if (std::any_of(r.vms.begin(), r.vms.end(), [](const AuditVm& v) { return !v.files.empty(); })) {
        out += "\nstats files and KVM devices (each holds its VM):\n";
        for (const auto& v : r.vms)
            for (const auto& f : v.files)
                out += fmt::format("  VM {:<17} {:<20} {}\n", vm_text(r.source == "iterator" ? v.id : 0), f.name,
                                   owner_text({f.holder}));
    }
    if (r.memslot_count()) {
        out += fmt::format("\n{:<17} {:>2} {:>5} {:<24} {:>8} {:>5} {:<16} {:>9} {:>10}\n", "MEMSLOT OF VM", "AS",
                           "SLOT", "GFN RANGE", "PAGES", "FLAGS", "USERSPACE ADDR", "GMEM INO", "GMEM PGOFF");
        for (const auto& v : r.vms)
            for (const auto& s : v.memslots)
                out += fmt::format("{:<17} {:>2} {:>5} {:<24} {:>8} {:>5x} {:<16x} {:>9} {:>10}\n", vm_text(v.id),
                                   s.as_id, s.slot.slot,
                                   fmt::format("[{:#x}, {:#x})", s.slot.base_gfn, s.slot.base_gfn + s.slot.npages),
                                   s.slot.npages, s.slot.flags, s.slot.uaddr,
                                   s.slot.gmem_ino ? std::to_string(s.slot.gmem_ino) : "-",
                                   s.slot.gmem_ino ? fmt::format("{:#x}", s.slot.gmem_pgoff) : "-");
    }
    if (std::any_of(r.vms.begin(), r.vms.end(), [](const AuditVm& v) { return v.attrs_read; })) {
        out += "\nshared/private (KVM's per-VM attributes; gfns not listed are shared):\n";
        for (const auto& v : r.vms) {
            if (!v.attrs_read)
                continue;
            if (v.attrs.empty())
                out += fmt::format("  VM {}: every gfn shared\n", vm_text(v.id));
            for (const auto& a : v.attrs)
                out += fmt::format("  VM {}: gfn [{:#x}, {:#x}) {} pages {}\n", vm_text(v.id), a.first_gfn, a.end_gfn,
                                   a.end_gfn - a.first_gfn,
                                   a.attributes & kAttrPrivate ? "private" : fmt::format("attributes {:#x}", a.attributes));
            if (v.attrs_incomplete)
                out += fmt::format("  VM {}: incomplete (the walk stopped or its ring buffer was full)\n", vm_text(v.id));
        }
    }
    if (!r.gmem.empty()) {
        out += fmt::format("\n{:>9} {:<17} {:>10} {:>5} {:>9} {:<28} {}\n", "GMEM INO", "VM", "SIZE KiB", "FLAGS",
                           "RESIDENT", "HELD BY", "BOUND TO");
        for (const auto& g : r.gmem) {
            std::string bound;
            for (const auto& s : g.bindings)
                bound += fmt::format("{}slot {} gfn {:#x} pgoff {:#x}", bound.empty() ? "" : "; ", s.slot.slot,
                                     s.slot.base_gfn, s.slot.gmem_pgoff);
            bool live = r.source == "iterator";
            out += fmt::format("{:>9} {:<17} {:>10} {:>5} {:>9} {:<28} {}\n", g.ino, vm_text(g.vm),
                               g.size_bytes >> 10, live ? fmt::format("{:#x}", g.flags) : "?",
                               live ? std::to_string(g.resident_pages) : "?", owner_text(g.holders),
                               live ? (bound.empty() ? "no memslot" : bound) : "?");
        }
    }
    if (!r.devices.empty()) {
        out += "\nVFIO and iommufd fds:\n";
        for (const auto& d : r.devices)
            out += fmt::format("  {:<15} {:<28} {}\n", d.kind, d.path, owner_text({d.holder}));
    }
    if (!r.dma.empty()) {
        out += fmt::format("\nDMA-mapped and pinned ranges (from {}):\n", r.recording);
        for (size_t i = 0; i < r.dma.size(); i++) {
            const auto& p = r.dma[i];
            out += fmt::format("  VM {:x} gfn [{:#x}, {:#x}) iova {:#x} by {} ({}/{})\n", r.dma_vms[i], p.first_gfn,
                               p.first_gfn + p.pages, p.iova, to_string(p.space), p.owner.comm, p.owner.tgid);
        }
    }
    out += "\nfindings:\n";
    for (const auto& f : r.findings)
        out += fmt::format("  {:<8} {:<18} {}\n", severity_name(f.severity), f.code, f.message);
    if (r.findings.empty())
        out += "  none\n";
    out += "\nnot seen:\n";
    for (const auto& u : r.unseen)
        out += fmt::format("  {}\n", u);
    return out;
}

}  // namespace gms
