// gmemscope pin: ranges an operator declares DMA-pinned (pins gmemscope
// cannot see: made before enforcement started, or by other means), and
// the index enforcement checks conversions against.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "loader/enforce/enforce.hpp"
#include "loader/base/fd.hpp"

namespace gms::cli {
namespace {

// A byte count or address: decimal or 0x hex, with an optional K/M/G/T
// suffix; no sign, and nothing that does not fit in 64 bits.
uint64_t parse_bytes(const std::string& opt, const std::string& s)
{
    auto bad = [&](const std::string& why) {
        return Error(kUsage, fmt::format("{} {}: {}", opt, s, why));
    };
    if (s.empty() || !isdigit(static_cast<unsigned char>(s[0])))
        throw bad("want a number (0x hex allowed) with an optional K/M/G/T suffix");
    errno = 0;
    char* end = nullptr;
    uint64_t v = std::strtoull(s.c_str(), &end, 0);
    if (errno == ERANGE)
        throw bad("does not fit in 64 bits");
    std::string rest(end);
    static const std::string suffixes = "KMGT";
    if (rest.empty())
        return v;
    auto at = rest.size() == 1 ? suffixes.find(char(toupper(rest[0]))) : std::string::npos;
    if (at == std::string::npos)
        throw bad("want a number (0x hex allowed) with an optional K/M/G/T suffix");
    unsigned shift = unsigned(10 * (at + 1));
    if (v > (UINT64_MAX >> shift))
        throw bad("does not fit in 64 bits");
    return v << shift;
}

}  // namespace

void register_pin(CLI::App& app, Options& opts, Action& action)
{
    static int pid = 0;
    static std::string gpa, size, note;
    auto* sub = app.add_subcommand("pin", "Declare DMA-pinned guest ranges for enforcement, and list what it checks");
    sub->require_subcommand(1);
    auto* add = sub->add_subcommand("add", "Declare gpa [GPA, GPA+SIZE) of process PID's VM pinned");
    auto* del = sub->add_subcommand("del", "Remove the declared ranges of PID that start at GPA");
    auto* list = sub->add_subcommand("list", "Declared ranges and the DMA mappings enforcement indexed");
    for (auto* s : {add, del}) {
        s->add_option("-p,--pid", pid, "The VM's process (its conversions are checked)")->required();
        s->add_option("--gpa", gpa, "Guest physical address, page aligned")->required();
    }
    add->add_option("--size", size, "Bytes, page aligned (K/M/G/T suffix)")->required();
    add->add_option("--note", note, "Why (shown in vetoes, 15 characters)");
    auto run = [&opts](CLI::App* which) {
        // The arguments first: a usage error is one whatever the privileges.
        uint64_t start = 0, bytes = 0;
        if (which != nullptr) {
            start = parse_bytes("--gpa", gpa);
            if (start % 4096)
                throw Error(kUsage, fmt::format("--gpa {:#x} is not page aligned", start));
        }
        if (which != nullptr && which->get_name() == "add") {
            bytes = parse_bytes("--size", size);
            if (!bytes || bytes % 4096)
                throw Error(kUsage, fmt::format("--size {:#x} is not a positive multiple of 4096", bytes));
            if (bytes > UINT64_MAX - start)
                throw Error(kUsage, fmt::format("--gpa {:#x} --size {:#x} runs past the end of the address space",
                                                start, bytes));
        }
        require_bpf_privileges("pin");
        if (which != nullptr && (pid <= 0 || kill(pid, 0) != 0))
            throw Error(kUsage, fmt::format("-p {}: no such process", pid));
        try {
            if (which != nullptr) {
                Fd prog(open_pinned("enforce_index_op"));
                if (which->get_name() == "add") {
                    declare_range(prog.get(), uint32_t(pid), start >> 12, (start + bytes) >> 12, note);
                    fmt::print(stderr, "declared gfn [{:#x}, {:#x}) pinned for pid {}\n", start >> 12,
                               (start + bytes) >> 12, pid);
                } else if (!undeclare_range(prog.get(), uint32_t(pid), start >> 12)) {
                    throw Error(kFailed, fmt::format("pid {} has no declared range at gpa {:#x}", pid, start));
                }
                return 0;
            }
            Fd maps(open_pinned("idx_maps"));
            auto pins = read_pins(maps.get());
            // declared ranges first, then mappings, each in address order
            std::sort(pins.begin(), pins.end(), [](const PinEntry& a, const PinEntry& b) {
                return std::tuple(a.pin.kind != GMS_PIN_DECLARED, a.pin.tgid, a.pin.vaddr) <
                       std::tuple(b.pin.kind != GMS_PIN_DECLARED, b.pin.tgid, b.pin.vaddr);
            });
            for (const auto& e : pins) {
                if (opts.json) {
                    nlohmann::json j = pin_json(e.pin);
                    j["type"] = "pin";
                    fmt::print("{}\n", dump_line(j));
                } else {
                    fmt::print("{}\n", describe_pin(e.pin));
                }
            }
        } catch (const std::invalid_argument& e) {
            throw Error(kUsage, e.what());
        } catch (const std::runtime_error& e) {
            if (dynamic_cast<const Error*>(&e))
                throw;
            throw Error(kFailed, e.what());
        }
        return 0;
    };
    add->callback([&action, run, add] { action = [run, add] { return run(add); }; });
    del->callback([&action, run, del] { action = [run, del] { return run(del); }; });
    list->callback([&action, run] { action = [run] { return run(nullptr); }; });
}

}  // namespace gms::cli
