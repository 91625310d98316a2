// Addresses to names for the stacks `top` samples: kernel addresses
// through /proc/kallsyms, user addresses through /proc/PID/maps and the
// ELF symbol tables of the mapped files.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gms {

class KernelSymbols {
public:
    KernelSymbols();   // reads /proc/kallsyms (root sees the addresses)
    std::string name(uint64_t ip) const;
    // (address, name) of every text symbol, by address.
    const std::vector<std::pair<uint64_t, std::string>>& text() const { return syms_; }

private:
    std::vector<std::pair<uint64_t, std::string>> syms_;   // by address
};

class UserSymbols {
public:
    // "func+0x1a (file)", "file+0xoff" without symbols, or the hex address.
    std::string name(pid_t pid, uint64_t ip);
    // Reads the process's maps now, while it lives, for later name() calls.
    void remember(pid_t pid) { maps(pid); }

private:
    struct Map {
        uint64_t start, end, offset;
        std::string path;
    };
    struct Elf {
        std::vector<std::pair<uint64_t, uint64_t>> loads;   // (p_offset, p_vaddr) of PT_LOADs
        std::map<uint64_t, std::pair<uint64_t, std::string>> funcs;   // st_value -> (size, name)
    };
    const std::vector<Map>& maps(pid_t pid);
    const Elf& elf(const std::string& path);

    std::map<pid_t, std::vector<Map>> maps_;
    std::map<std::string, Elf> elfs_;
};

}  // namespace gms
