// gmemscope pin: ranges an operator declares DMA-pinned (pins gmemscope
// cannot see: made before enforcement started, or by other means), and
// the index enforcement checks conversions against.
#include <unistd.h>

#include <cerrno>
#include <csignal>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "loader/enforce/enforce.hpp"
#include "loader/base/fd.hpp"

namespace gms::cli {
namespace {

// A byte count or address: decimal or 0x hex, with an optional K/M/G/T suffix.
uint64_t parse_bytes(const std::string& opt, const std::string& s)
{
    try {
        size_t used = 0;
        uint64_t v = std::stoull(s, &used, 0);
        std::string rest = s.substr(used);
        static const std::string suffixes = "KMGT";
        if (rest.size() == 1 && suffixes.find(char(toupper(rest[0]))) != std::string::npos)
            v <<= 10 * (suffixes.find(char(toupper(rest[0]))) + 1);
        else if (!rest.empty())
            throw std::invalid_argument(rest);
        return v;
    } catch (const std::exception&) {
        throw Error(kUsage, fmt::format("{} {}: want a number (0x hex allowed) with an optional K/M/G/T suffix", opt, s));
    }
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
        require_bpf_privileges("pin");
        if (which != nullptr && (pid <= 0 || kill(pid, 0) != 0))
            throw Error(kUsage, fmt::format("-p {}: no such process", pid));
        try {
            if (which != nullptr) {
                uint64_t start = parse_bytes("--gpa", gpa);
                if (start % 4096)
                    throw Error(kUsage, fmt::format("--gpa {:#x} is not page aligned", start));
                Fd map(open_pinned_map("declared"));
                if (which->get_name() == "add") {
                    uint64_t bytes = parse_bytes("--size", size);
                    if (!bytes || bytes % 4096)
                        throw Error(kUsage, fmt::format("--size {:#x} is not a positive multiple of 4096", bytes));
                    declare_range(map.get(), uint32_t(pid), start >> 12, (start + bytes) >> 12, note);
                    fmt::print(stderr, "declared gfn [{:#x}, {:#x}) pinned for pid {}\n", start >> 12,
                               (start + bytes) >> 12, pid);
                } else if (!undeclare_range(map.get(), uint32_t(pid), start >> 12)) {
                    throw Error(kFailed, fmt::format("pid {} has no declared range at gpa {:#x}", pid, start));
                }
                return 0;
            }
            Fd declared(open_pinned_map("declared")), dma(open_pinned_map("dma_pins"));
            for (const char* what : {"declared", "dma_pins"})
                for (const auto& e : read_pins(std::string(what) == "declared" ? declared.get() : dma.get())) {
                    if (opts.json) {
                        nlohmann::json j = pin_json(e.pin);
                        j["type"] = "pin";
                        fmt::print("{}\n", dump_line(j));
                    } else {
                        fmt::print("{}\n", describe_pin(e.pin));
                    }
                }
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
