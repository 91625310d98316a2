#include "loader/enforce/enforce.hpp"
#include "loader/base/fd.hpp"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include <bpf/bpf.h>
#include <fmt/format.h>

namespace gms {
namespace {


template <typename Info>
bool info_of(int fd, Info& info)
{
    __u32 len = sizeof(info);
    std::memset(&info, 0, sizeof(info));
    return fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0;
}

// The veto_state and idx_state maps among the program's maps.
std::optional<gms_veto_state> state_of_prog(int prog_fd, std::vector<IndexOwner>& index)
{
    struct bpf_prog_info info {};
    if (!info_of(prog_fd, info) || !info.nr_map_ids)
        return std::nullopt;
    std::vector<__u32> ids(info.nr_map_ids);
    __u32 n = info.nr_map_ids;
    std::memset(&info, 0, sizeof(info));
    info.nr_map_ids = n;
    info.map_ids = reinterpret_cast<__u64>(ids.data());
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
        return std::nullopt;
    for (__u32 id : ids) {
        Fd m(bpf_map_get_fd_by_id(id));
        struct bpf_map_info mi {};
        if (!info_of(m.get(), mi))
            continue;
        if (std::string(mi.name) == "idx_state")
            index = read_index_owners(m.get());
    }
    for (__u32 id : ids) {
        Fd m(bpf_map_get_fd_by_id(id));
        struct bpf_map_info mi {};
        if (!info_of(m.get(), mi) || std::string(mi.name) != "veto_state")
            continue;
        gms_veto_state st{};
        __u32 zero = 0;
        if (bpf_map_lookup_elem(m.get(), &zero, &st) == 0)
            return st;
    }
    return std::nullopt;
}

}  // namespace

EnforceStatus enforce_status()
{
    EnforceStatus s;
    __u32 id = 0;
    while (!s.active && bpf_link_get_next_id(id, &id) == 0) {
        Fd link(bpf_link_get_fd_by_id(id));
        struct bpf_link_info li {};
        if (!info_of(link.get(), li) || li.type != BPF_LINK_TYPE_TRACING ||
            li.tracing.attach_type != BPF_LSM_MAC)
            continue;
        Fd prog(bpf_prog_get_fd_by_id(li.prog_id));
        struct bpf_prog_info pi {};
        if (!info_of(prog.get(), pi) || std::string(pi.name) != "lsm_file_ioctl")
            continue;
        s.active = true;
        s.link_id = id;
        s.prog_id = li.prog_id;
        s.state = state_of_prog(prog.get(), s.index);
    }
    if (s.state)
        s.loader_running = kill(pid_t(s.state->loader_pid), 0) == 0;
    if (DIR* d = opendir(kEnforceDir)) {
        while (dirent* e = readdir(d))
            if (e->d_name[0] != '.')
                s.pinned.emplace_back(e->d_name);
        closedir(d);
    }
    return s;
}

nlohmann::json to_json(const EnforceStatus& s)
{
    nlohmann::json j = {{"type", "enforce_status"}, {"active", s.active}, {"pinned", s.pinned}};
    if (s.active) {
        j["link_id"] = s.link_id;
        j["prog_id"] = s.prog_id;
    }
    if (s.active && s.state) {
        j["mode"] = veto_mode_name(s.state->mode);
        j["since_unix_ns"] = s.state->since_unix_ns;
        j["loader_pid"] = s.state->loader_pid;
        j["loader_running"] = s.loader_running;
        j["persist"] = s.state->persist != 0;
        if (s.state->mode == GMS_VETO_ENFORCE)
            j["errno"] = errno_name(-s.state->err);
        j["vetoes"] = s.state->vetoes;
        j["would_veto"] = s.state->would_veto;
        j["fail_open"] = s.state->fail_open != 0;
        j["max_mappings_per_process"] = s.state->max_mappings;
        j["passed_unindexed"] = s.state->passed_unindexed;
    }
    if (s.active) {
        IndexTotals t = index_totals(s.index);
        j["indexed_mappings"] = t.mappings;
        j["not_indexed"] = t.not_indexed;
        j["unindexed_bytes"] = t.unindexed_bytes;
        nlohmann::json procs = nlohmann::json::array();
        for (const auto& o : s.index)
            if (o.state.not_indexed)
                procs.push_back({{"pid", o.state.tgid},
                                 {"comm", std::string(o.state.comm, strnlen(o.state.comm, sizeof(o.state.comm)))},
                                 {"indexed_mappings", o.state.mappings},
                                 {"not_indexed", o.state.not_indexed},
                                 {"unindexed_bytes", o.state.unindexed_bytes}});
        j["not_indexed_processes"] = procs;
    }
    return j;
}

std::optional<gms_veto_state> pinned_veto_state()
{
    Fd m(bpf_obj_get((std::string(kEnforceDir) + "/veto_state").c_str()));
    gms_veto_state st{};
    __u32 zero = 0;
    if (m.get() < 0 || bpf_map_lookup_elem(m.get(), &zero, &st) != 0)
        return std::nullopt;
    return st;
}

std::optional<IndexTotals> pinned_index_totals()
{
    Fd m(bpf_obj_get((std::string(kEnforceDir) + "/idx_state").c_str()));
    if (m.get() < 0)
        return std::nullopt;
    return index_totals(read_index_owners(m.get()));
}

std::vector<std::string> enforce_stop()
{
    std::vector<std::string> removed;
    for (const auto& name : enforce_status().pinned) {
        std::string path = std::string(kEnforceDir) + "/" + name;
        if (unlink(path.c_str()) == 0)
            removed.push_back(path);
    }
    rmdir(kEnforceDir);
    return removed;
}

std::vector<DmaHolder> dma_holders()
{
    std::vector<DmaHolder> out;
    DIR* proc = opendir("/proc");
    if (!proc)
        return out;
    while (dirent* p = readdir(proc)) {
        char* end = nullptr;
        long pid = std::strtol(p->d_name, &end, 10);
        if (*end || pid <= 0 || pid == getpid())
            continue;
        std::string fd_dir = fmt::format("/proc/{}/fd", pid);
        DIR* fds = opendir(fd_dir.c_str());
        if (!fds)
            continue;
        DmaHolder h{pid_t(pid), {}, {}};
        while (dirent* f = readdir(fds)) {
            char target[256];
            ssize_t n = readlink((fd_dir + "/" + f->d_name).c_str(), target, sizeof(target) - 1);
            if (n <= 0)
                continue;
            target[n] = 0;
            std::string t(target);
            // a type1 container, iommufd, or a VFIO device cdev (bound to an iommufd)
            if (t == "/dev/vfio/vfio" || t == "/dev/iommu" || t.starts_with("/dev/vfio/devices/"))
                h.fds.push_back(fmt::format("fd {} ({})", f->d_name, t));
        }
        closedir(fds);
        if (h.fds.empty())
            continue;
        std::ifstream comm(fmt::format("/proc/{}/comm", pid));
        std::getline(comm, h.comm);
        out.push_back(std::move(h));
    }
    closedir(proc);
    return out;
}

std::vector<IndexOwner> read_index_owners(int fd)
{
    std::vector<IndexOwner> out;
    uint64_t key = 0, next = 0;
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
        key = next;
        prev = &key;
        gms_idx_state st{};
        if (bpf_map_lookup_elem(fd, &key, &st) == 0)
            out.push_back({key, st});
    }
    return out;
}

IndexTotals index_totals(const std::vector<IndexOwner>& owners)
{
    IndexTotals t;
    for (const auto& o : owners) {
        // declared ranges are keyed by tgid, DMA mappings by a kernel address
        if (o.key <= UINT32_MAX)
            continue;
        t.mappings += o.state.mappings;
        t.not_indexed += o.state.not_indexed;
        t.unindexed_bytes += o.state.unindexed_bytes;
        t.processes_failing_closed += o.state.unindexed_bytes != 0;
    }
    return t;
}

std::vector<PinEntry> read_pins(int fd)
{
    std::vector<PinEntry> out;
    uint64_t key = 0, next = 0;
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
        key = next;
        prev = &key;
        gms_pin p{};
        if (bpf_map_lookup_elem(fd, &key, &p) == 0)
            out.push_back({p.tgid, p});
    }
    return out;
}

int64_t index_op(int prog_fd, gms_index_op op)
{
    // A syscall program's context is copied back to ctx_in (ctx_out must be unset).
    // (Not LIBBPF_OPTS: a GNU statement expression that clang's -Wpedantic refuses.)
    bpf_test_run_opts run{};
    run.sz = sizeof(run);
    run.ctx_in = &op;
    run.ctx_size_in = sizeof(op);
    if (bpf_prog_test_run_opts(prog_fd, &run) != 0)
        throw std::runtime_error(fmt::format("running the index's entry point: {}", strerror(errno)));
    return op.ret;
}

void declare_range(int prog_fd, uint32_t tgid, uint64_t first_gfn, uint64_t end_gfn, const std::string& note)
{
    if (first_gfn >= end_gfn)
        throw std::invalid_argument(fmt::format("gfn range [{:#x}, {:#x}) is empty or inverted", first_gfn, end_gfn));
    gms_index_op op{};
    op.op = GMS_INDEX_DECLARE;
    op.tgid = tgid;
    op.vaddr = first_gfn;
    op.bytes = end_gfn - first_gfn;
    std::strncpy(op.note, note.c_str(), sizeof(op.note) - 1);
    int64_t ret = index_op(prog_fd, op);
    if (ret == -EEXIST)
        throw std::runtime_error(fmt::format("pid {}: a declared range already starts at gfn {:#x} (`pin del` names "
                                             "ranges by their first gfn)",
                                             tgid, first_gfn));
    if (ret < 0)
        throw std::runtime_error(fmt::format("pid {}: the index cannot hold gfn [{:#x}, {:#x}): {} (at most {} "
                                             "declared ranges per process, gfns below 2^{})",
                                             tgid, first_gfn, end_gfn, errno_name(ret), GMS_IDX_MAX_DECLARED,
                                             GMS_IDX_GFN_BITS));
}

int undeclare_range(int prog_fd, uint32_t tgid, uint64_t first_gfn)
{
    gms_index_op op{};
    op.op = GMS_INDEX_UNDECLARE;
    op.tgid = tgid;
    op.vaddr = first_gfn;
    return int(index_op(prog_fd, op));
}

int open_pinned(const std::string& name)
{
    std::string path = std::string(kEnforceDir) + "/" + name;
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0)
        throw std::runtime_error(fmt::format("{}: {}: no enforcement is running or persisted (start `gmemscope "
                                             "enforce` or `gmemscope enforce --audit` first)",
                                             path, strerror(errno)));
    return fd;
}

}  // namespace gms
