// gmemscope explain: the causal chain of one guest page, from a
// recording or live: memslot bindings, faults and the pfn each mapped,
// invalidations, zaps (observed or inferred), conversions and DMA pins.
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/target.hpp"
#include "loader/model/engine.hpp"
#include "loader/capture/recording.hpp"
#include "loader/report/report.hpp"

namespace gms::cli {
namespace {

struct Query {
    std::string input;
    std::string vm;
    std::optional<uint64_t> gfn, gpa, hva, pfn, iova, dma_buf;
    TargetOptions live;
};

// A VM as gmemscope prints it: its struct kvm address in hex, and
// "#N" for the N-th VM the kernel placed at that address (0: not given).
struct VmRef {
    uint64_t kvm = 0;
    uint32_t lifetime = 0;
};

VmRef parse_vm(const std::string& s)
{
    try {
        if (s.empty() || !isxdigit(static_cast<unsigned char>(s[0])))
            throw std::invalid_argument(s);
        size_t used = 0;
        VmRef r{std::stoull(s, &used, 16), 0};
        if (used < s.size() && s[used] == '#') {
            size_t n_used = 0;
            std::string n = s.substr(used + 1);
            unsigned long life = std::stoul(n, &n_used, 10);
            if (n_used == n.size() && life >= 1 && life <= UINT32_MAX && n.find_first_not_of("0123456789") == std::string::npos) {
                r.lifetime = uint32_t(life);
                used = s.size();
            }
        }
        if (used == s.size())
            return r;
    } catch (const std::exception&) {
    }
    throw Error(kUsage, fmt::format("--vm {}: expected the VM's kernel address in hex, as gmemscope prints it, "
                                    "with #N for the N-th VM at that address (ffff8881...#2)", s));
}

// (vm, gfn) the query names, once the engine knows enough to translate it.
std::optional<std::pair<uint64_t, uint64_t>> resolve(const Engine& e, const Query& q, uint64_t vm)
{
    if (q.gfn)
        return std::pair{vm, *q.gfn};
    if (q.gpa)
        return std::pair{vm, *q.gpa >> 12};
    if (q.hva)
        return e.gfn_of_hva(0, *q.hva);
    if (q.pfn)
        return e.gfn_of_pfn(*q.pfn);
    return e.gfn_of_iova(*q.iova);
}

nlohmann::json now_json(const GfnInfo& i)
{
    nlohmann::json j = {{"in_memslot", i.in_slot}, {"attributes", i.attrs}, {"faults", i.story.faults},
                        {"invalidations", i.story.punches}};
    if (i.in_slot) {
        j["slot"] = i.slot.slot;
        j["hva"] = fmt::format("{:#x}", i.hva);
        if (i.slot.gmem_ino) {
            j["gmem_ino"] = i.slot.gmem_ino;
            j["gmem_index"] = i.gmem_index;
        }
    }
    if (i.pfn)
        j["pfn"] = fmt::format("{:#x}", *i.pfn);
    nlohmann::json pins = nlohmann::json::array();
    for (const auto& p : i.pins)
        pins.push_back({{"by", to_string(p.space)}, {"tgid", p.owner.tgid}, {"comm", p.owner.comm},
                        {"iova", fmt::format("{:#x}", p.iova)}, {"since_ns", p.since_ns}});
    j["pins"] = pins;
    return j;
}

std::string now_text(const GfnInfo& i)
{
    if (!i.in_slot)
        return "in no memslot now";
    std::string s = fmt::format("slot {}, hva {:#x}", i.slot.slot, i.hva);
    if (i.slot.gmem_ino)
        s += fmt::format(", gmem ino {} index {:#x}", i.slot.gmem_ino, i.gmem_index);
    s += i.pfn ? fmt::format(", pfn {:#x}", *i.pfn) : std::string(", no page resident");
    s += fmt::format(", attributes {:#x} ({})", i.attrs, i.attrs & GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE ? "private" : "shared");
    for (const auto& p : i.pins)
        s += fmt::format(", pinned by {} (pid {} {}) at iova {:#x}", to_string(p.space), p.owner.tgid, p.owner.comm,
                         p.iova);
    if (i.pins.empty())
        s += ", no DMA mapping known";
    return s;
}

// vm: the engine's key of the VM (0: every VM).
int print(const Options& opts, const Engine& e, uint64_t vm, uint64_t gfn, const Lost& damage = {})
{
    GfnInfo info = e.gfn_info(vm, gfn);
    uint64_t t0 = e.t0_ns();
    auto at = [t0](uint64_t ns) { return ns >= t0 ? double(ns - t0) / 1e9 : 0.0; };
    const auto timeline = e.timeline();
    if (opts.json) {
        nlohmann::json tl = nlohmann::json::array();
        for (const auto& t : timeline)
            tl.push_back({{"ts_ns", t.ts_ns}, {"what", t.what}, {"inferred", t.inferred}});
        nlohmann::json j = {{"type", "explain"}, {"gfn", fmt::format("{:#x}", gfn)}, {"timeline", tl}};
        if (auto v = e.vms().find(vm); vm && v != e.vms().end()) {
            j["vm"] = fmt::format("{:#x}", v->second.id);
            j["vm_lifetime"] = v->second.lifetime;
            j["now"] = now_json(info);
        }
        return print_document(std::move(j), damage);
    }
    std::string who;
    if (auto v = e.vms().find(vm); v != e.vms().end())
        who = fmt::format(" (pid {} {})", v->second.owner.tgid, v->second.owner.comm);
    fmt::print("gfn {:#x} of {}{}\n", gfn, vm ? fmt::format("VM {}", e.vm_name(vm)) : std::string("every VM"), who);
    if (vm)
        fmt::print("  now: {}\n", now_text(info));
    if (timeline.empty())
        fmt::print("  no event touched it\n");
    for (const auto& t : timeline)
        fmt::print("  {:12.6f} s {} {}\n", at(t.ts_ns), t.inferred ? "~" : " ", t.what);
    if (std::any_of(timeline.begin(), timeline.end(), [](const auto& t) { return t.inferred; }))
        fmt::print("  (~ inferred, not observed)\n");
    return 0;
}

// A dma-buf's life, by its inode (report lists them).
int print_dma_buf(const Options& opts, const Engine& e, uint64_t ino, const Lost& damage = {})
{
    auto it = e.dma_bufs().find(ino);
    if (it == e.dma_bufs().end())
        throw Error(kFailed, fmt::format("no dma-buf with inode {} was seen exported ({} were)", ino,
                                         e.dma_bufs().size()));
    const DmaBuf& d = it->second;
    uint64_t t0 = e.t0_ns();
    auto at = [t0](uint64_t ns) { return ns >= t0 ? double(ns - t0) / 1e9 : 0.0; };
    const auto timeline = e.timeline(d);
    if (opts.json) {
        nlohmann::json tl = nlohmann::json::array();
        for (const auto& t : timeline)
            tl.push_back({{"ts_ns", t.ts_ns}, {"what", t.what}, {"inferred", false}});
        return print_document({{"type", "explain"}, {"dma_buf", dma_buf_json(e, d)}, {"timeline", tl}}, damage);
    }
    fmt::print("dma-buf ino {} ({})\n", ino, d.exporter.empty() ? "exporter unseen" : d.exporter);
    for (const auto& t : timeline)
        fmt::print("  {:12.6f} s   {}\n", at(t.ts_ns), t.what);
    bool revoked = !d.moves.empty() && d.moves.back().revoked;
    fmt::print("  now: {}\n", revoked ? "revoked" : "usable by its importers (as far as traced)");
    return 0;
}

int from_recording(const Options& opts, const Query& q)
{
    if (q.dma_buf) {
        Engine engine;
        Lost damage = read_recording(q.input, [&](const Event& ev) { engine.add(ev); });
        int rc = print_dma_buf(opts, engine, *q.dma_buf, damage);
        std::fflush(stdout);
        if (!opts.json)
            report_damage(damage);
        return rc;
    }
    VmRef ref = q.vm.empty() ? VmRef{} : parse_vm(q.vm);
    uint64_t vm = 0;   // the engine's key, from a translated address
    std::optional<std::pair<uint64_t, uint64_t>> target;
    try {
        if (!q.gfn && !q.gpa) {
            // Addresses other than a gpa mean something only while mapped:
            // translate at the first point of the recording where they are.
            Engine scan;
            RecordingReader reader(q.input);
            while (!target) {
                auto ev = reader.next();
                if (!ev)
                    break;
                scan.add(*ev);
                target = resolve(scan, q, vm);
            }
            if (!target)
                throw Error(kFailed, "the address is not mapped to any gfn at any point of the recording");
            vm = target->first;
            // the same recording gives the same VM keys: watch that lifetime
            const Vm& v = scan.vms().at(vm);
            ref = {v.id, v.lifetime};
        } else {
            target = resolve(Engine{}, q, 0);
        }
        Engine engine;
        engine.watch(ref.kvm, ref.lifetime, target->second);
        Lost damage = read_recording(q.input, [&](const Event& ev) { engine.add(ev); });
        if (ref.kvm) {
            auto key = engine.find_vm(ref.kvm, ref.lifetime);
            if (!key)
                throw Error(kFailed, fmt::format("no VM {} in the recording", q.vm));
            vm = *key;
        }
        int rc = print(opts, engine, vm, target->second, damage);
        std::fflush(stdout);
        if (!opts.json)
            report_damage(damage);
        return rc;
    } catch (const BadRecording& e) {
        throw Error(kBadInput, e.what());
    }
}

int live(const Options& opts, const Query& q)
{
    if (!q.gfn && !q.gpa && !q.dma_buf)
        throw Error(kUsage, "live, explain takes --gfn, --gpa or --dma-buf (other addresses: explain a recording "
                            "with -i)");
    VmRef ref = q.vm.empty() ? VmRef{} : parse_vm(q.vm);
    TargetOptions live = q.live;
    live.command_stdout_to_stderr = opts.json;
    Target target = open_target("explain", live);
    Engine engine;
    if (q.dma_buf) {
        run_session(*target.tracer, target.child.get(), target.session, [&](const Event& ev) { engine.add(ev); },
                    [&](const gms_drops_record& c) { engine.add(Event{c}); });
        return print_dma_buf(opts, engine, *q.dma_buf);
    }
    uint64_t gfn = q.gfn ? *q.gfn : *q.gpa >> 12;
    engine.watch(ref.kvm, ref.lifetime, gfn);
    run_session(*target.tracer, target.child.get(), target.session, [&](const Event& ev) { engine.add(ev); },
                [&](const gms_drops_record& c) { engine.add(Event{c}); });
    uint64_t vm = ref.kvm ? engine.find_vm(ref.kvm, ref.lifetime).value_or(0) : 0;
    return print(opts, engine, vm, gfn);
}

}  // namespace

void register_explain(CLI::App& app, Options& opts, Action& action)
{
    static Query q;
    auto* sub = app.add_subcommand("explain", "The causal chain of one guest page, from a recording or live");
    auto* input = sub->add_option("-i,--input", q.input, "Recording to read (else trace live)");
    sub->add_option("--vm", q.vm,
                    "The VM as gmemscope prints it: its kernel address in hex, #N for the N-th VM at that "
                    "address (the kernel reuses a destroyed VM's address); without #N every VM at it");
    auto* by = sub->add_option_group("page", "Which page (one of)");
    by->add_option("--gfn", q.gfn, "Guest frame number")->check(unsigned_number());
    by->add_option("--gpa", q.gpa, "Guest physical address")->check(unsigned_number());
    by->add_option("--hva", q.hva, "Host virtual address in the VM's process")->check(unsigned_number());
    by->add_option("--pfn", q.pfn, "Host page frame number")->check(unsigned_number());
    by->add_option("--iova", q.iova, "IO virtual address of a DMA mapping")->check(unsigned_number());
    by->add_option("--dma-buf", q.dma_buf, "Or a dma-buf's life, by its inode (report lists them)")
        ->check(unsigned_number());
    by->require_option(1);
    // -i reads a recording: what only live tracing takes is refused with it.
    input->excludes(
        sub->add_option("-p,--pid", q.live.pids, "Live: only these processes")->delimiter(',')->allow_extra_args(false));
    input->excludes(
        sub->add_option("-d,--duration", q.live.duration_s, "Live: stop after SECONDS")->check(positive_seconds()));
    input->excludes(sub->add_option("command", q.live.command, "Live: command to start and trace (after --)"));
    sub->callback([&opts, &action] {
        action = [&opts] { return q.input.empty() ? live(opts, q) : from_recording(opts, q); };
    });
}

}  // namespace gms::cli
