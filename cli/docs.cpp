// Man pages and bash completion, generated from the CLI11 definitions at
// build time (`gmemscope --generate-docs DIR`, hidden; CMakeLists.txt runs
// it): what --help says and what the pages say cannot drift apart.
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/cli.hpp"

namespace gms::cli {
namespace {

// troff: a backslash and a leading dot or quote are escaped; '-' is a minus.
std::string roff(const std::string& s)
{
    std::string r;
    for (size_t i = 0; i < s.size(); i++) {
        char c = s[i];
        if (c == '\\')
            r += "\\e";
        else if (c == '-')
            r += "\\-";
        else if ((c == '.' || c == '\'') && (i == 0 || s[i - 1] == '\n'))
            r += "\\&" + std::string(1, c);
        else
            r += c;
    }
    return r;
}

// The options of `app` and of its option groups (nameless sub-apps).
std::vector<const CLI::Option*> options_of(const CLI::App* app)
{
    std::vector<const CLI::Option*> out;
    for (const auto* o : app->get_options())
        if (!o->get_group().empty())   // hidden options have no group
            out.push_back(o);
    for (const auto* g : app->get_subcommands([](const CLI::App* a) { return a->get_name().empty(); }))
        for (const auto* o : options_of(g))
            out.push_back(o);
    return out;
}

std::vector<const CLI::App*> subcommands_of(const CLI::App* app)
{
    return app->get_subcommands([](const CLI::App* a) { return !a->get_name().empty(); });
}

std::string option_names(const CLI::Option* o)
{
    std::string names;
    for (const auto& s : o->get_snames())
        names += (names.empty() ? "-" : ", -") + s;
    for (const auto& l : o->get_lnames())
        names += (names.empty() ? "--" : ", --") + l;
    return names.empty() ? o->get_name() : names;
}

std::string options_roff(const CLI::App* app)
{
    std::string out;
    for (const auto* o : options_of(app)) {
        if (o->get_lnames() == std::vector<std::string>{"help"})
            continue;
        std::string type = o->get_items_expected_max() == 0 ? "" : o->get_type_name();
        out += fmt::format(".TP\n.B {}{}\n{}{}\n", roff(option_names(o)),
                           type.empty() ? "" : " \" \" \\fI" + roff(type) + "\\fR", roff(o->get_description()),
                           o->get_default_str().empty() ? "" : " (default: " + roff(o->get_default_str()) + ")");
    }
    return out;
}

const char* kExitCodes = R"(.SH EXIT STATUS
.TP
.B 0
success
.TP
.B 1
the operation failed at run time
.TP
.B 2
bad flags or arguments
.TP
.B 3
missing capabilities (CAP_BPF, CAP_PERFMON, ...)
.TP
.B 4
this kernel cannot do what was asked
.TP
.B 5
a recording or input file is corrupt (not a recording, bad header or metadata)
.TP
.B 6
a recording is damaged or cut short: everything it holds before and between the damage was read and reported
)";

void write_page(const std::string& dir, const std::string& name, const std::string& text)
{
    std::ofstream out(dir + "/" + name + ".1");
    out << text;
    if (!out.flush())
        throw Error(kFailed, fmt::format("cannot write {}/{}.1", dir, name));
}

std::string header(const std::string& name, const std::string& summary)
{
    std::string upper;
    for (char c : name)
        upper += char(toupper(static_cast<unsigned char>(c)));
    return fmt::format(".TH {} 1 \"\" \"gmemscope {}\" \"gmemscope manual\"\n.SH NAME\n{} \\- {}\n", roff(upper),
                       GMS_VERSION, roff(name), roff(summary));
}

void bash_completion(const CLI::App& app, const std::string& path)
{
    std::string cases;
    std::function<void(const CLI::App*, const std::string&)> each = [&](const CLI::App* a, const std::string& key) {
        std::string words;
        for (const auto* s : subcommands_of(a))
            words += s->get_name() + " ";
        for (const auto* o : options_of(a))
            for (const auto& n : o->get_snames())
                words += "-" + n + " ";
        for (const auto* o : options_of(a))
            for (const auto& n : o->get_lnames())
                words += "--" + n + " ";
        cases += fmt::format("        \"{}\") words=\"{}\" ;;\n", key, words);
        for (const auto* s : subcommands_of(a))
            each(s, key.empty() ? s->get_name() : key + " " + s->get_name());
    };
    each(&app, "");
    std::ofstream out(path);
    out << "# bash completion for gmemscope (generated from its command-line definitions)\n"
           "_gmemscope() {\n"
           "    local cur=${COMP_WORDS[COMP_CWORD]} path=\"\" w words\n"
           "    # The subcommand path so far: words that are neither options nor their values.\n"
           "    for w in \"${COMP_WORDS[@]:1:COMP_CWORD-1}\"; do\n"
           "        [[ $w == -- ]] && return 0\n"
           "        case \"$w\" in\n"
           "            -*) ;;\n"
           "            *) case \" $(_gmemscope_words \"$path\") \" in *\" $w \"*) path=\"${path:+$path }$w\" ;; esac ;;\n"
           "        esac\n"
           "    done\n"
           "    words=$(_gmemscope_words \"$path\")\n"
           "    case \"$cur\" in\n"
           "        -*|'') ;;\n"
           "        *) [[ ${COMP_WORDS[COMP_CWORD-1]} == -* ]] && { COMPREPLY=($(compgen -f -- \"$cur\")); return 0; } ;;\n"
           "    esac\n"
           "    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
           "}\n"
           "_gmemscope_words() {\n"
           "    local words=\"\"\n"
           "    case \"$1\" in\n"
        << cases
        << "    esac\n"
           "    echo \"$words\"\n"
           "}\n"
           "complete -o default -F _gmemscope gmemscope\n";
    if (!out.flush())
        throw Error(kFailed, fmt::format("cannot write {}", path));
}

}  // namespace

void generate_docs(const CLI::App& app, const std::string& dir)
{
    std::string see_also;
    for (const auto* s : subcommands_of(&app))
        see_also += fmt::format("{}.BR gmemscope\\-{} (1)", see_also.empty() ? "" : ",\n", s->get_name());
    std::string main = header("gmemscope", app.get_description()) +
                       ".SH SYNOPSIS\n.B gmemscope\n[\\fB\\-\\-json\\fR] [\\fB\\-v\\fR] \\fISUBCOMMAND\\fR "
                       "[\\fIOPTIONS\\fR]\n.SH DESCRIPTION\n"
                       "gmemscope traces and enforces what happens to guest_memfd memory of confidential VMs: "
                       "gmem invalidations, shared/private conversions, KVM MMU zaps, VFIO, iommufd and dma\\-buf "
                       "pins, correlated per guest frame.\n.SH SUBCOMMANDS\n";
    for (const auto* s : subcommands_of(&app))
        main += fmt::format(".TP\n.BR gmemscope\\-{} (1)\n{}\n", s->get_name(), roff(s->get_description()));
    main += ".SH OPTIONS\n" + options_roff(&app) + kExitCodes + ".SH SEE ALSO\n" + see_also + "\n";
    write_page(dir, "gmemscope", main);
    for (const auto* s : subcommands_of(&app)) {
        std::string page = header("gmemscope-" + s->get_name(), s->get_description()) +
                           fmt::format(".SH SYNOPSIS\n.B gmemscope\n[\\fB\\-\\-json\\fR] [\\fB\\-v\\fR]\n.B {}\n",
                                       roff(s->get_name()));
        auto subs = subcommands_of(s);
        page += subs.empty() ? "[\\fIOPTIONS\\fR]\n" : "\\fISUBCOMMAND\\fR [\\fIOPTIONS\\fR]\n";
        page += ".SH DESCRIPTION\n" + roff(s->get_description()) + ".\n.SH OPTIONS\n" + options_roff(s);
        for (const auto* sub : subs)
            page += fmt::format(".SH {} {}\n{}.\n", roff(s->get_name()), roff(sub->get_name()),
                                roff(sub->get_description())) +
                    options_roff(sub);
        page += kExitCodes + std::string(".SH SEE ALSO\n.BR gmemscope (1)\n");
        write_page(dir, "gmemscope-" + s->get_name(), page);
    }
    bash_completion(app, dir + "/gmemscope.bash");
}

}  // namespace gms::cli
