// What this kernel lets gmemscope do, found by trying: BTF, which BPF
// program types load (a tiny real load each), the LSM list, which
// symbols and tracepoints exist, and the pseudo filesystems.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

struct btf;

namespace gms {

struct LoadProbe {
    bool ok = false;
    int err = 0;          // errno of BPF_PROG_LOAD when refused
    std::string target;   // attach target the probe used, if any
    std::string detail;   // why it was refused, in words
};

struct Mount {
    std::string fs;       // "tracefs", "bpf", "securityfs"
    std::string path;
    bool mounted = false;
    bool mounted_by_gmemscope = false;
    std::string error;
};

enum class ProgKind { tracepoint, raw_tp, tp_btf, fentry, fexit, lsm, iter };
std::string_view prog_kind_name(ProgKind k);

class Features {
public:
    // Mounts tracefs, bpffs and securityfs where missing (and says so in
    // `mounts`), then probes.  Needs CAP_BPF/CAP_SYS_ADMIN for the loads.
    static Features probe();
    Features(Features&&) noexcept;
    Features& operator=(Features&&) noexcept;
    ~Features();

    const LoadProbe& load(ProgKind k) const { return loads_.at(k); }
    bool loads(ProgKind k) const { return load(k).ok; }
    bool vmlinux_btf() const { return vmlinux_ != nullptr; }
    bool bpf_lsm_active() const { return bpf_lsm_; }
    const std::string& lsm_list() const { return lsm_list_; }
    const std::string& kernel_release() const { return release_; }
    const std::vector<Mount>& mounts() const { return mounts_; }
    std::string tracefs() const;

    // "vmlinux" or the module whose BTF has FUNC `name`; "" if none.
    std::string btf_func_owner(std::string_view name) const;
    // Whether argument `index` (0: the first) of FUNC `name` is a pointer,
    // through typedefs and qualifiers; nullopt without that FUNC or argument.
    std::optional<bool> btf_func_arg_is_pointer(std::string_view name, unsigned index) const;
    bool has_btf_typedef(std::string_view name) const;  // e.g. btf_trace_<tp>
    bool has_kallsyms(std::string_view name) const;
    bool has_tracepoint(std::string_view category, std::string_view name) const;

    nlohmann::json to_json() const;

private:
    Features() = default;
    void load_btf();
    std::pair<std::string, const struct btf*> find_btf(std::string_view name, int kind) const;
    void probe_loads();

    std::string release_;
    std::vector<Mount> mounts_;
    std::string lsm_list_;
    bool bpf_lsm_ = false;
    struct btf* vmlinux_ = nullptr;
    std::vector<std::pair<std::string, struct btf*>> modules_;
    std::set<std::string, std::less<>> kallsyms_;
    std::map<ProgKind, LoadProbe> loads_;
};

// CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN; "" when held, else what is missing.
std::string missing_bpf_capabilities();

}  // namespace gms
