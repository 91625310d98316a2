#include "loader/probe/features.hpp"

#include <linux/bpf.h>
#include <sys/mount.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "loader/events/events.hpp"
#include "loader/base/log.hpp"

namespace gms {
namespace fs = std::filesystem;

std::string_view prog_kind_name(ProgKind k)
{
    switch (k) {
    case ProgKind::tracepoint: return "tracepoint";
    case ProgKind::raw_tp: return "raw_tp";
    case ProgKind::tp_btf: return "tp_btf";
    case ProgKind::fentry: return "fentry";
    case ProgKind::fexit: return "fexit";
    case ProgKind::lsm: return "lsm";
    case ProgKind::iter: return "iter";
    }
    return "?";
}

namespace {

std::string read_file(const std::string& path)
{
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    return s;
}

Mount ensure_mounted(const std::string& type, const std::string& default_path)
{
    Mount m{type, default_path, false, false, {}};
    std::ifstream mounts("/proc/mounts");
    std::string dev, path, fstype, rest;
    while (mounts >> dev >> path >> fstype && std::getline(mounts, rest)) {
        if (fstype == type) {
            m.path = path;
            m.mounted = true;
            return m;
        }
    }
    if (::mount(type.c_str(), default_path.c_str(), type.c_str(), 0, nullptr) == 0) {
        m.mounted = m.mounted_by_gmemscope = true;
        log::info("note: {} was not mounted; mounted it at {}", type, default_path);
    } else {
        m.error = fmt::format("mount -t {} {} {}: {}", type, type, default_path, strerror(errno));
    }
    return m;
}

// r0 = 0; exit: the smallest program every type accepts.
const struct bpf_insn kReturnZero[] = {
    {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},
    {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
};

LoadProbe try_load(bpf_prog_type type, bpf_attach_type attach, int btf_id, std::string target)
{
    LoadProbe p;
    p.target = std::move(target);
    char log_buf[4096] = {};
    // Not LIBBPF_OPTS: a GNU statement expression that clang's -Wpedantic refuses.
    bpf_prog_load_opts opts{};
    opts.sz = sizeof(opts);
    opts.expected_attach_type = attach;
    opts.attach_btf_id = static_cast<__u32>(btf_id);
    opts.log_level = 1;
    opts.log_size = sizeof(log_buf);
    opts.log_buf = log_buf;
    int fd = bpf_prog_load(type, "gms_probe", "GPL", kReturnZero, 2, &opts);
    if (fd >= 0) {
        close(fd);
        p.ok = true;
        return p;
    }
    p.err = -fd;
    std::string verifier(log_buf, strnlen(log_buf, sizeof(log_buf)));
    if (p.err == EPERM && verifier.empty())
        p.detail = "BPF_PROG_LOAD returned EPERM before the verifier ran "
                   "(refused by kernel policy, lockdown or missing capability)";
    else
        p.detail = fmt::format("BPF_PROG_LOAD returned {}{}{}", errno_name(-p.err),
                               verifier.empty() ? "" : ": ",
                               verifier.substr(0, verifier.find('\n')));
    return p;
}

LoadProbe missing_target(std::string what)
{
    LoadProbe p;
    p.err = ENOENT;
    p.detail = fmt::format("no {} in vmlinux BTF to attach a probe to", what);
    return p;
}

}  // namespace

Features::Features(Features&& o) noexcept { *this = std::move(o); }

Features& Features::operator=(Features&& o) noexcept
{
    if (this != &o) {
        this->~Features();
        release_ = std::move(o.release_);
        mounts_ = std::move(o.mounts_);
        lsm_list_ = std::move(o.lsm_list_);
        bpf_lsm_ = o.bpf_lsm_;
        vmlinux_ = std::exchange(o.vmlinux_, nullptr);
        modules_ = std::move(o.modules_);
        o.modules_.clear();
        kallsyms_ = std::move(o.kallsyms_);
        loads_ = std::move(o.loads_);
    }
    return *this;
}

Features::~Features()
{
    for (auto& [name, b] : modules_)
        btf__free(b);
    modules_.clear();
    btf__free(vmlinux_);
    vmlinux_ = nullptr;
}

Features Features::probe()
{
    Features f;
    struct utsname u {};
    uname(&u);
    f.release_ = u.release;
    f.mounts_.push_back(ensure_mounted("tracefs", "/sys/kernel/tracing"));
    f.mounts_.push_back(ensure_mounted("bpf", "/sys/fs/bpf"));
    f.mounts_.push_back(ensure_mounted("securityfs", "/sys/kernel/security"));
    const Mount& sec = f.mounts_.back();
    if (sec.mounted)
        f.lsm_list_ = read_file(sec.path + "/lsm");
    std::stringstream lsms(f.lsm_list_);
    for (std::string name; std::getline(lsms, name, ',');)
        f.bpf_lsm_ |= name == "bpf";
    f.load_btf();
    std::ifstream ks("/proc/kallsyms");
    std::string addr, kind, name;
    while (ks >> addr >> kind >> name) {
        std::string mod;
        if (ks.peek() == ' ' || ks.peek() == '\t')
            std::getline(ks, mod);
        f.kallsyms_.insert(name);
    }
    f.probe_loads();
    return f;
}

void Features::load_btf()
{
    vmlinux_ = btf__load_vmlinux_btf();
    if (!vmlinux_) {
        vmlinux_ = nullptr;
        return;
    }
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/sys/kernel/btf", ec)) {
        std::string name = entry.path().filename();
        if (name == "vmlinux")
            continue;
        struct btf* b = btf__parse_split(entry.path().c_str(), vmlinux_);
        if (b)
            modules_.emplace_back(name, b);
    }
}

void Features::probe_loads()
{
    loads_[ProgKind::tracepoint] = try_load(BPF_PROG_TYPE_TRACEPOINT, BPF_CGROUP_INET_INGRESS, 0, "");
    loads_[ProgKind::raw_tp] = try_load(BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_CGROUP_INET_INGRESS, 0, "");
    if (!vmlinux_) {
        for (auto k : {ProgKind::tp_btf, ProgKind::fentry, ProgKind::fexit, ProgKind::lsm,
                       ProgKind::iter})
            loads_[k] = LoadProbe{false, ENOENT, "", "no vmlinux BTF (/sys/kernel/btf/vmlinux): "
                                                     "the kernel needs CONFIG_DEBUG_INFO_BTF=y"};
        return;
    }
    auto id_of = [&](const char* name, int kind) { return btf__find_by_name_kind(vmlinux_, name, kind); };
    int tp = id_of("btf_trace_sched_switch", BTF_KIND_TYPEDEF);
    loads_[ProgKind::tp_btf] = tp > 0 ? try_load(BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP, tp, "sched_switch")
                                      : missing_target("btf_trace_sched_switch");
    int fn = -1;
    std::string fn_name;
    for (const char* cand : {"bpf_fentry_test1", "security_file_ioctl", "vfs_read"}) {
        if ((fn = id_of(cand, BTF_KIND_FUNC)) > 0) {
            fn_name = cand;
            break;
        }
    }
    loads_[ProgKind::fentry] = fn > 0 ? try_load(BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, fn, fn_name)
                                      : missing_target("traceable function");
    loads_[ProgKind::fexit] = fn > 0 ? try_load(BPF_PROG_TYPE_TRACING, BPF_TRACE_FEXIT, fn, fn_name)
                                     : missing_target("traceable function");
    int lsm = id_of("bpf_lsm_file_ioctl", BTF_KIND_FUNC);
    loads_[ProgKind::lsm] = lsm > 0 ? try_load(BPF_PROG_TYPE_LSM, BPF_LSM_MAC, lsm, "file_ioctl")
                                    : missing_target("bpf_lsm_file_ioctl (CONFIG_BPF_LSM)");
    int it = id_of("bpf_iter_task_file", BTF_KIND_FUNC);
    loads_[ProgKind::iter] = it > 0 ? try_load(BPF_PROG_TYPE_TRACING, BPF_TRACE_ITER, it, "task_file")
                                    : missing_target("bpf_iter_task_file");
}

std::string Features::tracefs() const
{
    for (const auto& m : mounts_)
        if (m.fs == "tracefs" && m.mounted)
            return m.path;
    return "";
}

// The BTF holding `name` of `kind`, vmlinux's first, and its owner's name
// ("vmlinux" or the module); {"", nullptr} if none.
std::pair<std::string, const struct btf*> Features::find_btf(std::string_view name, int kind) const
{
    std::string n(name);
    if (vmlinux_ && btf__find_by_name_kind(vmlinux_, n.c_str(), kind) > 0)
        return {"vmlinux", vmlinux_};
    for (const auto& [mod, b] : modules_) {
        // Split BTF also finds vmlinux's types; those were checked above.
        if (btf__find_by_name_kind(b, n.c_str(), kind) > 0)
            return {mod, b};
    }
    return {"", nullptr};
}

std::string Features::btf_func_owner(std::string_view name) const { return find_btf(name, BTF_KIND_FUNC).first; }

std::optional<bool> Features::btf_func_arg_is_pointer(std::string_view name, unsigned index) const
{
    const struct btf* b = find_btf(name, BTF_KIND_FUNC).second;
    if (!b)
        return std::nullopt;
    int id = btf__find_by_name_kind(b, std::string(name).c_str(), BTF_KIND_FUNC);
    const struct btf_type* proto = btf__type_by_id(b, btf__type_by_id(b, id)->type);
    if (!proto || !btf_is_func_proto(proto) || index >= btf_vlen(proto))
        return std::nullopt;
    const struct btf_type* t = btf__type_by_id(b, btf_params(proto)[index].type);
    while (t && (btf_is_typedef(t) || btf_is_mod(t)))
        t = btf__type_by_id(b, t->type);
    return t && btf_is_ptr(t);
}

bool Features::has_btf_typedef(std::string_view name) const { return find_btf(name, BTF_KIND_TYPEDEF).second; }

bool Features::has_kallsyms(std::string_view name) const { return kallsyms_.contains(name); }

bool Features::has_tracepoint(std::string_view category, std::string_view name) const
{
    std::string root = tracefs();
    if (root.empty())
        return false;
    std::error_code ec;
    return fs::exists(fmt::format("{}/events/{}/{}", root, category, name), ec);
}

nlohmann::json Features::to_json() const
{
    nlohmann::json loads = nlohmann::json::object();
    for (const auto& [k, p] : loads_) {
        nlohmann::json j = {{"loads", p.ok}};
        if (!p.target.empty())
            j["target"] = p.target;
        if (!p.ok) {
            j["errno"] = errno_name(-p.err);
            j["reason"] = p.detail;
        }
        loads[std::string(prog_kind_name(k))] = j;
    }
    nlohmann::json mounts = nlohmann::json::array();
    for (const auto& m : mounts_) {
        nlohmann::json j = {{"fs", m.fs}, {"path", m.path}, {"mounted", m.mounted},
                            {"mounted_by_gmemscope", m.mounted_by_gmemscope}};
        if (!m.error.empty())
            j["error"] = m.error;
        mounts.push_back(j);
    }
    nlohmann::json modules = nlohmann::json::array();
    for (const auto& [mod, b] : modules_)
        modules.push_back(mod);
    return {{"kernel", release_},
            {"btf", {{"vmlinux", vmlinux_btf()}, {"modules", modules}}},
            {"program_types", loads},
            {"lsm", {{"list", lsm_list_}, {"bpf_lsm_active", bpf_lsm_}}},
            {"mounts", mounts}};
}

std::string missing_bpf_capabilities()
{
    std::ifstream status("/proc/self/status");
    std::string line;
    uint64_t eff = 0;
    while (std::getline(status, line))
        if (line.rfind("CapEff:", 0) == 0)
            eff = std::stoull(line.substr(7), nullptr, 16);
    auto has = [&](int cap) { return (eff >> cap) & 1; };
    constexpr int kSysAdmin = 21, kPerfmon = 38, kBpf = 39;
    if (has(kSysAdmin) || (has(kBpf) && has(kPerfmon)))
        return "";
    std::vector<std::string> missing;
    if (!has(kBpf))
        missing.push_back("CAP_BPF");
    if (!has(kPerfmon))
        missing.push_back("CAP_PERFMON");
    return fmt::format("{} (or CAP_SYS_ADMIN)", fmt::join(missing, " and "));
}

}  // namespace gms
