#include "loader/report/symbols.hpp"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace gms {

KernelSymbols::KernelSymbols()
{
    std::ifstream in("/proc/kallsyms");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string addr, kind, name;
        ls >> addr >> kind >> name;
        if (kind == "t" || kind == "T" || kind == "W" || kind == "w")
            syms_.emplace_back(std::stoull(addr, nullptr, 16), name);
    }
    std::sort(syms_.begin(), syms_.end());
}

std::string KernelSymbols::name(uint64_t ip) const
{
    auto it = std::upper_bound(syms_.begin(), syms_.end(), std::pair{ip, std::string("\xff")});
    if (it == syms_.begin() || syms_.empty() || ip == 0)
        return fmt::format("{:#x}", ip);
    --it;
    return fmt::format("{}+{:#x}", it->second, ip - it->first);
}

const std::vector<UserSymbols::Map>& UserSymbols::maps(pid_t pid)
{
    auto [it, fresh] = maps_.try_emplace(pid);
    if (!fresh)
        return it->second;
    std::ifstream in(fmt::format("/proc/{}/maps", pid));
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string range, perms, off, dev, ino, path;
        ls >> range >> perms >> off >> dev >> ino;
        std::getline(ls >> std::ws, path);
        if (path.empty() || path[0] != '/' || perms.find('x') == std::string::npos)
            continue;
        auto dash = range.find('-');
        it->second.push_back({std::stoull(range.substr(0, dash), nullptr, 16),
                              std::stoull(range.substr(dash + 1), nullptr, 16), std::stoull(off, nullptr, 16), path});
    }
    return it->second;
}

const UserSymbols::Elf& UserSymbols::elf(const std::string& path)
{
    auto [it, fresh] = elfs_.try_emplace(path);
    if (!fresh)
        return it->second;
    elf_version(EV_CURRENT);
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return it->second;
    ::Elf* e = elf_begin(fd, ELF_C_READ, nullptr);
    size_t nph = 0;
    if (e && elf_getphdrnum(e, &nph) == 0) {
        for (size_t i = 0; i < nph; i++) {
            GElf_Phdr ph;
            if (gelf_getphdr(e, int(i), &ph) && ph.p_type == PT_LOAD)
                it->second.loads.emplace_back(ph.p_offset, ph.p_vaddr);
        }
    }
    // .symtab when the file has one, else .dynsym.
    for (int want : {SHT_SYMTAB, SHT_DYNSYM}) {
        for (Elf_Scn* scn = e ? elf_nextscn(e, nullptr) : nullptr; scn; scn = elf_nextscn(e, scn)) {
            GElf_Shdr sh;
            if (!gelf_getshdr(scn, &sh) || int(sh.sh_type) != want)
                continue;
            Elf_Data* data = elf_getdata(scn, nullptr);
            size_t n = sh.sh_entsize ? sh.sh_size / sh.sh_entsize : 0;
            for (size_t i = 0; data && i < n; i++) {
                GElf_Sym sym;
                if (!gelf_getsym(data, int(i), &sym) || GELF_ST_TYPE(sym.st_info) != STT_FUNC || !sym.st_value)
                    continue;
                if (const char* nm = elf_strptr(e, sh.sh_link, sym.st_name))
                    it->second.funcs[sym.st_value] = {sym.st_size, nm};
            }
        }
        if (!it->second.funcs.empty())
            break;
    }
    if (e)
        elf_end(e);
    close(fd);
    return it->second;
}

std::string UserSymbols::name(pid_t pid, uint64_t ip)
{
    for (const auto& m : maps(pid)) {
        if (ip < m.start || ip >= m.end)
            continue;
        uint64_t file_off = ip - m.start + m.offset;
        std::string base = m.path.substr(m.path.rfind('/') + 1);
        const Elf& e = elf(m.path);
        for (auto [p_off, p_vaddr] : e.loads) {
            if (file_off < p_off)
                continue;
            uint64_t vaddr = file_off - p_off + p_vaddr;
            auto f = e.funcs.upper_bound(vaddr);
            if (f == e.funcs.begin())
                break;
            --f;
            if (vaddr < f->first + std::max<uint64_t>(f->second.first, 1))
                return fmt::format("{}+{:#x} ({})", f->second.second, vaddr - f->first, base);
        }
        return fmt::format("{}+{:#x}", base, file_off);
    }
    return fmt::format("{:#x}", ip);
}

}  // namespace gms
