#include "loader/capture/tracer.hpp"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

// The skeleton embeds the BPF object as one string literal, longer than
// clang's -Wpedantic allows.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverlength-strings"
#include "gmemscope_bpf.skel.h"
#pragma GCC diagnostic pop
#include "ioctls.h"
#include "loader/base/log.hpp"

namespace gms {
namespace {

// MKDEV() in include/linux/kdev_t.h: 12 bits major, 20 bits minor.
uint32_t kernel_dev(dev_t d) { return (major(d) << 20) | minor(d); }

// The kernel's dev_t of anon_inodefs: any anon_inode_getfile() file shows
// it, eventfd is the cheapest.
uint32_t anon_inodefs_dev()
{
    int fd = eventfd(0, EFD_CLOEXEC);
    struct stat st {};
    if (fd < 0 || fstat(fd, &st) != 0)
        throw std::runtime_error(fmt::format("eventfd/fstat: {}", strerror(errno)));
    close(fd);
    return kernel_dev(st.st_dev);
}

// The kernel's dev_t of the filesystem gmem inodes live on, which the
// page-cache tracepoints name: anon_inodefs through v6.18
// (anon_inode_create_getfile() in __kvm_gmem_create()), guest_memfd's own
// pseudo filesystem by v7.3 (kvm_gmem_mnt, GUEST_MEMFD_MAGIC, one
// superblock for every gmem inode). Read from a gmem file made for the
// purpose; where KVM or guest_memfd is missing no gmem page is ever
// added, and anon_inodefs's is as good as any.
uint32_t gmem_dev()
{
    struct {
        uint64_t size, flags, reserved[6];
    } args{4096, 0, {}};   // struct kvm_create_guest_memfd (v6.8)
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int vm = kvm >= 0 ? ioctl(kvm, KVM_CREATE_VM, 0) : -1;
    int gmem = vm >= 0 ? ioctl(vm, GMS_KVM_CREATE_GUEST_MEMFD, &args) : -1;
    struct stat st {};
    bool ok = gmem >= 0 && fstat(gmem, &st) == 0;
    for (int fd : {gmem, vm, kvm})
        if (fd >= 0)
            close(fd);
    return ok ? kernel_dev(st.st_dev) : anon_inodefs_dev();
}

// The ioctls bpf/syscalls.bpf.c decodes, as bits of enum gms_ioctl_op,
// tested against the cmd before anything else: an enforcement-only
// session needs the conversions it decides on and the DMA calls its index
// keeps; a tracing session every ioctl the catalog names. KVM_RUN is none
// of them: events inside it find their vCPU themselves.
static_assert(GMS_IOC_MAX <= 32);
uint32_t decoded_ioctls(const TraceOptions& opts)
{
    if (!opts.veto_only)
        return ((1u << GMS_IOC_MAX) - 1) & ~1u;
    uint32_t bits = 0;
    for (uint32_t op : {GMS_IOC_SET_MEMORY_ATTRIBUTES, GMS_IOC_SET_MEMORY_ATTRIBUTES2, GMS_IOC_GMEM_CONVERT_PRIVATE,
                        GMS_IOC_VFIO_MAP_DMA, GMS_IOC_VFIO_UNMAP_DMA, GMS_IOC_IOAS_MAP, GMS_IOC_IOAS_MAP_FILE,
                        GMS_IOC_IOAS_UNMAP})
        bits |= 1u << op;
    return bits;
}

}  // namespace

void add_counts(gms_agg_val& sum, const gms_agg_val& v)
{
    sum.punches += v.punches;
    sum.punched_bytes += v.punched_bytes;
    sum.punch_errors += v.punch_errors;
    sum.invalidated_pages += v.invalidated_pages;
    sum.faults += v.faults;
    sum.allocated_pages += v.allocated_pages;
    for (size_t i = 0; i < GMS_HIST_SLOTS; i++) {
        sum.size_hist[i] += v.size_hist[i];
        sum.lat_hist[i] += v.lat_hist[i];
    }
}

std::set<std::string, std::less<>> built_programs()
{
    std::set<std::string, std::less<>> out;
    struct gmemscope_bpf* skel = gmemscope_bpf__open();
    if (!skel)
        throw std::runtime_error(fmt::format("opening the BPF object: {}", strerror(errno)));
    struct bpf_program* prog;
    bpf_object__for_each_program(prog, skel->obj) out.emplace(bpf_program__name(prog));
    gmemscope_bpf__destroy(skel);
    return out;
}

// The verifier's log ends with its error, then "processed N insns". Newer
// verifiers (7.3's; not 6.18's) follow the error with a diagnostics block
// ("Verification failed: ...", "Reason:", "At:", "Causal path:",
// "Suggestion:") whose last lines are advice, not the error.
std::string refusal_reason(const std::vector<std::string>& warnings, const std::string& prog, int err)
{
    std::string core, verifier;
    bool in_log = false, diagnostics = false;
    for (const auto& w : warnings) {
        std::stringstream lines(w);
        for (std::string line; std::getline(lines, line);) {
            if (line.find("-- BEGIN PROG LOAD LOG --") != std::string::npos && line.find(prog) != std::string::npos) {
                in_log = true;
                diagnostics = false;
                continue;
            }
            if (line.find("-- END PROG LOAD LOG --") != std::string::npos) {
                in_log = false;
                continue;
            }
            if (core.empty() && line.find("failed to resolve CO-RE relocation") != std::string::npos)
                core = line;
            if (in_log && line.starts_with("Verification failed:"))
                diagnostics = true;
            if (in_log && !diagnostics && !line.empty() && !line.starts_with("processed ") &&
                !line.starts_with("verification time"))
                verifier = line;
        }
    }
    auto trim = [](std::string s) {
        if (auto at = s.find("failed to resolve CO-RE relocation"); at != std::string::npos)
            s = s.substr(at);
        return s.size() > 200 ? s.substr(0, 200) + "..." : s;
    };
    if (!core.empty())
        return "CO-RE relocation: " + trim(core);
    if (!verifier.empty())
        return fmt::format("verifier: {} ({})", trim(verifier), errno_name(err));
    return fmt::format("BPF_PROG_LOAD: {}", errno_name(err));
}

std::optional<Tracer::Refusal> Tracer::load(const TraceOptions& opts, const std::set<std::string, std::less<>>& wanted)
{
    gmemscope_bpf__destroy(skel_);
    skel_ = gmemscope_bpf__open();
    if (!skel_)
        throw std::runtime_error(fmt::format("opening the BPF object: {}", strerror(errno)));
    struct bpf_program* prog;
    bpf_object__for_each_program(prog, skel_->obj)
        bpf_program__set_autoload(prog, wanted.contains(bpf_program__name(prog)));
    // Precise-tier sections are bare ("fentry"): the target is the symbol
    // the catalog resolved on this kernel, in vmlinux or a module's BTF.
    std::map<std::string, std::string, std::less<>> targets;
    for (const auto& h : hooks_) {
        if (h.chosen < 0)
            continue;
        const MechStatus& ms = h.mechs[h.chosen];
        if (ms.mech->kind != Mech::fentry && ms.mech->kind != Mech::fexit)
            continue;
        for (auto p : ms.mech->programs)
            targets[std::string(p)] = ms.target;
    }
    // Test-only: GMS_TEST_ATTACH_TARGET=PROGRAM=TARGET moves one program
    // onto another attach target (one the kernel lacks, to see a hook lost
    // and the session go on: tests/unit/test_schema.cpp).
    if (const char* t = getenv("GMS_TEST_ATTACH_TARGET")) {
        std::string spec = t;
        if (auto eq = spec.find('='); eq != std::string::npos)
            targets[spec.substr(0, eq)] = spec.substr(eq + 1);
    }
    for (const auto& [name, target] : targets) {
        prog = bpf_object__find_program_by_name(skel_->obj, name.c_str());
        if (!prog || !bpf_program__autoload(prog))
            continue;
        // libbpf looks the target up in the kernel's BTF here, not at load.
        if (int err = bpf_program__set_attach_target(prog, 0, target.c_str()))
            return Refusal{name, fmt::format("attach target {}: {}", target, errno_name(err))};
    }

    skel_->rodata->targ_filter_tgid = !opts.tgids.empty();
    skel_->rodata->targ_filter_vm = !opts.vms.empty();
    skel_->rodata->targ_wakeup_bytes = opts.wakeup_bytes;
    skel_->rodata->targ_gmem_dev = gmem_dev_;
    skel_->rodata->targ_anon_dev = anon_inodefs_dev();
    skel_->rodata->targ_set_spte = wanted.contains("kvm_mmu_set_spte");
    skel_->rodata->targ_aggregate = opts.aggregate;
    skel_->rodata->targ_stack_sample = opts.stack_sample;
    skel_->rodata->targ_veto_mode = opts.veto_mode;
    skel_->rodata->targ_veto_ret = -opts.veto_errno;
    skel_->rodata->targ_fail_open = opts.veto_fail_open;
    skel_->rodata->targ_idx_max_mappings = opts.index_max_mappings;
    skel_->rodata->targ_idx_max_declared = opts.index_max_declared;
    skel_->rodata->targ_ioctl_ops = decoded_ioctls(opts);
    // aggregates count adds on their own: nothing waits for a fault there
    skel_->rodata->targ_fold_allocs = !opts.aggregate && wanted.contains("gmem_pagecache_add") &&
                                      wanted.contains("syscalls_ioctl_exit");
    bpf_map__set_max_entries(skel_->maps.events, static_cast<__u32>(opts.ringbuf_bytes));

    std::vector<std::string> warnings;
    int err;
    {
        log::LibbpfCapture capture(warnings);
        err = gmemscope_bpf__load(skel_);
    }
    if (!err)
        return std::nullopt;
    for (const auto& w : warnings)
        log::debug("{}", w);
    // libbpf names the program it gave up on: "prog 'NAME': ..."
    for (auto it = warnings.rbegin(); it != warnings.rend(); ++it)
        if (auto at = it->find("prog '"); at != std::string::npos) {
            auto end = it->find('\'', at + 6);
            std::string name = it->substr(at + 6, end - at - 6);
            if (wanted.contains(name))
                return Refusal{name, refusal_reason(warnings, name, err)};
        }
    for (const auto& w : warnings)
        log::info("{}", w);
    throw std::runtime_error(fmt::format("loading BPF programs: {} (run with -v for the verifier log)",
                                         strerror(-err)));
}

std::optional<Tracer::Refusal> Tracer::attach(const std::set<std::string, std::less<>>& selected)
{
    // Which hooks each program serves, for the report of what is attached.
    struct Serves {
        std::vector<std::string> hooks;
        Mech kind;
        std::string target;
    };
    std::map<std::string, Serves, std::less<>> serves;
    for (const auto& h : hooks_) {
        if (h.chosen < 0 || !selected.contains(h.hook->name))
            continue;
        const MechStatus& ms = h.mechs[h.chosen];
        for (auto p : ms.mech->programs) {
            auto& s = serves[std::string(p)];
            s.hooks.emplace_back(h.hook->name);
            s.kind = ms.mech->kind;
            s.target = ms.target;
        }
    }
    struct bpf_program* prog;
    bpf_object__for_each_program(prog, skel_->obj) {
        if (!bpf_program__autoload(prog) || bpf_program__type(prog) == BPF_PROG_TYPE_SYSCALL)
            continue;   // a syscall program is run (BPF_PROG_TEST_RUN), not attached
        std::string name = bpf_program__name(prog);
        struct bpf_link* link = bpf_program__attach(prog);
        if (!link)
            return Refusal{name, fmt::format("attaching: {}", errno_name(-errno))};
        links_.push_back(link);
        std::string attach = bpf_program__section_name(prog);
        auto it = serves.find(name);
        if (it == serves.end()) {   // task_fork: the process filter; lsm_file_ioctl: enforcement
            attached_.push_back({{}, name == "lsm_file_ioctl" ? "lsm" : "tp_btf", name, attach});
            continue;
        }
        const Serves& s = it->second;
        if (s.kind == Mech::fentry || s.kind == Mech::fexit)
            attach += "/" + s.target;   // bare section: the target was set at load
        attached_.push_back({s.hooks, std::string(mech_name(s.kind)), name, attach});
    }
    return std::nullopt;
}

void Tracer::detach()
{
    for (auto* l : links_)
        bpf_link__destroy(l);
    links_.clear();
    attached_.clear();
}

Tracer::Tracer(const Features& features, const TraceOptions& opts) : refused_(opts.refused)
{
    if (opts.veto_errno < 1 || opts.veto_errno > 4095)
        throw std::invalid_argument(fmt::format("veto errno {} is not in 1..4095", opts.veto_errno));
    auto built = built_programs();
    selected_ = select_hooks(opts.hooks);
    gmem_dev_ = gmem_dev();
    // What the session cannot do without: enforcement's programs (it must
    // never report itself active while not) and the fork follower.
    std::set<std::string, std::less<>> required;
    if (opts.follow_forks)
        required.emplace("task_fork");
    if (opts.veto_mode != GMS_VETO_OFF) {
        // The ioctl exit keeps the index of DMA mappings; the LSM decides;
        // `pin add|del` runs the index's own entry point; a process's exit takes
        // its entries out.
        required.insert({"syscalls_ioctl_enter", "syscalls_ioctl_exit", "enforce_index_op", "enforce_process_exit"});
        if (opts.veto_mode != GMS_VETO_AUDIT_SYSCALL)
            required.emplace("lsm_file_ioctl");
    }
    // A program the kernel refuses (the verifier, a CO-RE relocation, an
    // attach target it lacks) costs the hooks it serves that mechanism
    // only: they are resolved again without it, falling back to their next
    // mechanism or becoming unobservable with the kernel's reason.
    // In-kernel aggregates count removed pages at the page-cache tracepoint
    // (gmem_pagecache_delete): gmem.invalidate's precise programs see ranges,
    // not pages, so top leaves them out.
    Refused excluded;
    if (opts.aggregate)
        for (const Hook& h : catalog())
            if (h.name == "gmem.invalidate")
                for (const Mechanism& m : h.mechanisms)
                    if (m.kind == Mech::fentry || m.kind == Mech::fexit)
                        for (auto p : m.programs)
                            excluded[std::string(p)] = "aggregates count pages at the page-cache tracepoint";
    for (;;) {
        Refused ruled_out = excluded;
        ruled_out.insert(refused_.begin(), refused_.end());
        hooks_ = resolve(features, built, ruled_out);
        auto wanted = opts.veto_only ? std::set<std::string, std::less<>>{} : chosen_programs(hooks_, selected_);
        wanted.insert(required.begin(), required.end());
        auto refusal = load(opts, wanted);
        if (!refusal)
            refusal = attach(selected_);
        if (!refusal)
            break;
        detach();
        const auto& [failed, why] = *refusal;
        if (required.contains(failed) || refused_.contains(failed))
            throw std::runtime_error(fmt::format("loading BPF program {}: refused by the kernel: {} "
                                                 "(run with -v for the verifier log)", failed, why));
        log::info("note: this kernel refuses {} ({}); its hooks fall back to their next mechanism", failed, why);
        refused_[failed] = why;
    }
    for (pid_t t : opts.tgids)
        add_tgid(t);
    for (uint64_t vm : opts.vms) {
        __u8 one = 1;
        bpf_map__update_elem(skel_->maps.vms, &vm, sizeof(vm), &one, sizeof(one), BPF_ANY);
    }
    if (opts.veto_mode != GMS_VETO_OFF) {
        struct timespec now {};
        clock_gettime(CLOCK_REALTIME, &now);
        gms_veto_state st{};
        st.since_unix_ns = uint64_t(now.tv_sec) * 1000000000ull + uint64_t(now.tv_nsec);
        st.mode = opts.veto_mode;
        st.err = opts.veto_errno;
        st.loader_pid = uint32_t(getpid());
        st.persist = opts.veto_persist;
        st.fail_open = opts.veto_fail_open;
        st.max_mappings = opts.index_max_mappings;
        __u32 zero = 0;
        bpf_map__update_elem(skel_->maps.veto_state, &zero, sizeof(zero), &st, sizeof(st), BPF_ANY);
    }
    rb_ = ring_buffer__new(bpf_map__fd(skel_->maps.events), on_record, this, nullptr);
    if (!rb_)
        throw std::runtime_error(fmt::format("ring buffer: {}", strerror(errno)));
}

std::vector<std::pair<std::string, std::string>> Tracer::unobserved() const
{
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& h : hooks_)
        if (h.chosen < 0 && selected_.contains(h.hook->name))
            out.emplace_back(h.hook->name, h.why_none);
    return out;
}

int Tracer::map_fd(const char* name) const
{
    struct bpf_map* m = bpf_object__find_map_by_name(skel_->obj, name);
    return m ? bpf_map__fd(m) : -1;
}

int Tracer::prog_fd(const char* name) const
{
    struct bpf_program* p = bpf_object__find_program_by_name(skel_->obj, name);
    return p ? bpf_program__fd(p) : -1;
}

void Tracer::pin_enforcement(const std::string& dir, bool links)
{
    auto pin = [](int err, const std::string& what) {
        if (err)
            throw std::runtime_error(fmt::format("pinning {}: {}", what, strerror(-err)));
    };
    for (struct bpf_map* m : {skel_->maps.idx_nodes, skel_->maps.idx_starts, skel_->maps.idx_tgids,
                              skel_->maps.idx_maps, skel_->maps.idx_state, skel_->maps.idx_next_id,
                              skel_->maps.veto_state})
        pin(bpf_map__pin(m, (dir + "/" + bpf_map__name(m)).c_str()), bpf_map__name(m));
    // `gmemscope pin add|del` runs it on the pinned maps.
    pin(bpf_program__pin(skel_->progs.enforce_index_op, (dir + "/enforce_index_op").c_str()), "enforce_index_op");
    if (!links)
        return;
    // links_ and attached_ are filled together, one entry per program.
    for (size_t i = 0; i < links_.size(); i++) {
        struct bpf_link* l = links_[i];
        std::string path = dir + "/link_" + attached_[i].program;
        pin(bpf_link__pin(l, path.c_str()), path);
        // The pin keeps the link attached once this process is gone.
        bpf_link__disconnect(l);
    }
}

Tracer::~Tracer()
{
    ring_buffer__free(rb_);
    detach();
    gmemscope_bpf__destroy(skel_);
}

void Tracer::add_tgid(pid_t tgid)
{
    __u32 key = static_cast<__u32>(tgid);
    __u8 one = 1;
    bpf_map__update_elem(skel_->maps.tgids, &key, sizeof(key), &one, sizeof(one), BPF_ANY);
}

int Tracer::ready_fd() const { return ring_buffer__epoll_fd(rb_); }

int Tracer::on_record(void* ctx, void* data, size_t size)
{
    auto* self = static_cast<Tracer*>(ctx);
    std::string why;
    auto ev = decode({static_cast<const std::byte*>(data), size}, why);
    if (!ev) {
        self->decode_errors_++;
        log::debug("undecodable record from the kernel: {}", why);
        return 0;
    }
    self->received_++;
    (*self->sink_)(*ev);
    return 0;
}

uint64_t Tracer::consume(const Sink& sink)
{
    sink_ = &sink;
    uint64_t before = received_;
    ring_buffer__consume(rb_);
    sink_ = nullptr;
    return received_ - before;
}

gms_drops_record Tracer::counters() const
{
    gms_drops_record r{};
    r.hdr.type = GMS_REC_DROPS;
    r.hdr.abi = GMS_ABI_VERSION;
    r.hdr.size = sizeof(r);
    struct timespec ts {};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    r.hdr.ts_ns = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
    int ncpu = libbpf_num_possible_cpus();
    std::vector<gms_counters> percpu(static_cast<size_t>(ncpu));
    __u32 zero = 0;
    if (bpf_map__lookup_elem(skel_->maps.counters, &zero, sizeof(zero), percpu.data(),
                             sizeof(gms_counters) * percpu.size(), 0) == 0) {
        for (const auto& c : percpu) {
            for (int t = 0; t < GMS_EV_MAX; t++)
                r.tried[t] += c.tried[t];
            for (int d = 0; d < GMS_DROP_MAX; d++)
                r.dropped[d] += c.dropped[d];
        }
    }
    r.received = received_;
    return r;
}

std::vector<Tracer::SampledStack> Tracer::sampled_stacks() const
{
    std::vector<SampledStack> out;
    auto ips = [this](int32_t id) {
        std::vector<uint64_t> v(32);
        uint32_t key = static_cast<uint32_t>(id);
        if (id < 0 || bpf_map__lookup_elem(skel_->maps.stacks, &key, sizeof(key), v.data(), v.size() * 8, 0) != 0)
            return std::vector<uint64_t>{};
        v.erase(std::find(v.begin(), v.end(), 0ull), v.end());
        return v;
    };
    gms_stack_key key{}, next{};
    const gms_stack_key* prev = nullptr;
    while (bpf_map__get_next_key(skel_->maps.stack_counts, prev, &next, sizeof(next)) == 0) {
        key = next;
        prev = &key;
        uint64_t count = 0;
        if (bpf_map__lookup_elem(skel_->maps.stack_counts, &key, sizeof(key), &count, sizeof(count), 0) == 0)
            out.push_back({key.tgid, ips(key.user_stack), ips(key.kernel_stack), count});
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.count > b.count; });
    return out;
}

std::map<std::pair<uint64_t, uint32_t>, gms_agg_val> Tracer::aggregates() const
{
    std::map<std::pair<uint64_t, uint32_t>, gms_agg_val> out;
    std::vector<gms_agg_val> percpu(static_cast<size_t>(libbpf_num_possible_cpus()));
    gms_agg_key key{}, next{};
    const gms_agg_key* prev = nullptr;
    while (bpf_map__get_next_key(skel_->maps.agg, prev, &next, sizeof(next)) == 0) {
        key = next;
        prev = &key;
        if (bpf_map__lookup_elem(skel_->maps.agg, &key, sizeof(key), percpu.data(),
                                 sizeof(gms_agg_val) * percpu.size(), 0) != 0)
            continue;
        gms_agg_val& sum = out[{key.ino, key.tgid}];
        for (const auto& v : percpu) {
            if (v.vm)
                sum.vm = v.vm;
            if (v.comm[0])
                std::memcpy(sum.comm, v.comm, sizeof(sum.comm));
            add_counts(sum, v);
        }
    }
    return out;
}

void Tracer::forget_aggregate(uint64_t ino, uint32_t tgid)
{
    gms_agg_key key{};
    key.ino = ino;
    key.tgid = tgid;
    bpf_map__delete_elem(skel_->maps.agg, &key, sizeof(key), 0);
}

}  // namespace gms
