#include "loader/enforce/enforce.hpp"
#include "loader/base/fd.hpp"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
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

// The veto_state map among the program's maps.
std::optional<gms_veto_state> state_of_prog(int prog_fd)
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
        s.state = state_of_prog(prog.get());
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

std::vector<PinEntry> read_pins(int map_fd)
{
    std::vector<PinEntry> out;
    uint64_t key = 0, next = 0;
    const void* prev = nullptr;
    // declared is keyed by a u32 tgid, dma_pins by a u64 mm: read the key size.
    struct bpf_map_info mi {};
    if (!info_of(map_fd, mi))
        return out;
    while (bpf_map_get_next_key(map_fd, prev, &next) == 0) {
        key = next;
        prev = &key;
        gms_pin_set set{};
        if (bpf_map_lookup_elem(map_fd, &key, &set) != 0)
            continue;
        uint64_t k = mi.key_size == 4 ? uint32_t(key) : key;
        for (uint32_t i = 0; i < set.n && i < GMS_MAX_PINS; i++)
            out.push_back({k, set.pins[i]});
    }
    return out;
}

void declare_range(int map_fd, uint32_t tgid, uint64_t first_gfn, uint64_t end_gfn, const std::string& note)
{
    gms_pin_set set{};
    bpf_map_lookup_elem(map_fd, &tgid, &set);
    if (set.n >= GMS_MAX_PINS)
        throw std::runtime_error(fmt::format("pid {} has {} declared ranges already, the most enforcement checks",
                                             tgid, GMS_MAX_PINS));
    gms_pin& p = set.pins[set.n++];
    p = {};
    p.vaddr = first_gfn;
    p.end = end_gfn;
    p.tgid = tgid;
    p.kind = GMS_PIN_DECLARED;
    struct timespec ts {};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    p.since_ns = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
    std::strncpy(p.comm, note.c_str(), sizeof(p.comm) - 1);
    if (bpf_map_update_elem(map_fd, &tgid, &set, BPF_ANY))
        throw std::runtime_error(fmt::format("updating the declared ranges: {}", strerror(errno)));
}

int undeclare_range(int map_fd, uint32_t tgid, uint64_t first_gfn)
{
    gms_pin_set set{};
    if (bpf_map_lookup_elem(map_fd, &tgid, &set))
        return 0;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < set.n && i < GMS_MAX_PINS; i++)
        if (set.pins[i].vaddr != first_gfn)
            set.pins[kept++] = set.pins[i];
    int removed = int(set.n - kept);
    set.n = kept;
    if (kept)
        bpf_map_update_elem(map_fd, &tgid, &set, BPF_ANY);
    else
        bpf_map_delete_elem(map_fd, &tgid);
    return removed;
}

int open_pinned_map(const std::string& name)
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
