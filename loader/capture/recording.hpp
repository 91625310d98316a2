// The recording file: a header (magic, format and ABI versions, JSON
// metadata naming the kernel, the clock and the hooks attached), then
// records byte for byte as the kernel wrote them, then a final counters
// record.  Counters are also written every second, so a recording cut
// short still says what was lost up to then.
//
// Format 2 (written now) puts the records in blocks, each with a CRC32C
// over its header and records, and the metadata's CRC32C in the file
// header: every byte is covered, so damage is found and named.  A block
// ends at each counters record (every second) and at 64 KiB, so a
// recorder killed or stopped by a full disk loses at most its last
// second or 64 KiB.  Format 1 (records without blocks) is still read.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/base/output.hpp"
#include "loader/events/events.hpp"

namespace gms {

inline constexpr char kRecordingMagic[8] = {'G', 'M', 'E', 'M', 'S', 'C', 'P', '\0'};
inline constexpr uint32_t kRecordingVersion = 2;

// CRC32C (Castagnoli), as iSCSI and ext4 use it.
uint32_t crc32c(std::span<const std::byte> data, uint32_t crc = 0);

// The file is not a readable recording at all (header, metadata): nothing to salvage.
struct BadRecording : std::runtime_error {
    BadRecording(const std::string& path, uint64_t offset, const std::string& why);
    uint64_t offset;
};

// A stretch of a recording that could not be read: [offset, offset + bytes),
// or a place where records are known to be missing (bytes 0).
struct Damage {
    uint64_t offset = 0;
    uint64_t bytes = 0;
    // checksum_mismatch, cut_short, no_block, record_count, corrupt_record,
    // metadata, missing_records, after_final, no_end (schemas/summary.schema.json)
    std::string cause;
    std::string why;
    // Records lost here, where the block's header or the counters records
    // say how many; else only the bytes are known.
    std::optional<uint64_t> records_lost;
    // Records walked out of this stretch's block although it failed its check.
    uint64_t records_salvaged = 0;
};

class RecordingWriter {
public:
    // Writes the header to `out` and publishes it (a recorder killed
    // from then on leaves a readable recording at its name).  Only
    // sequential writes: `out` may be a pipe.
    RecordingWriter(Output& out, const nlohmann::json& meta);
    // The same into a file of its own (Output::Existing::keep_old unless
    // `overwrite`).
    RecordingWriter(const std::string& path, const nlohmann::json& meta, bool overwrite = false);
    ~RecordingWriter();
    RecordingWriter(const RecordingWriter&) = delete;
    RecordingWriter& operator=(const RecordingWriter&) = delete;

    // A counters record also ends the current block: it reaches the file.
    void write(const Event& ev);
    // Ends the recording: the last counters, flagged final, then
    // Output::commit (fsync for a file).
    void finish(gms_drops_record counters);
    uint64_t records() const { return records_; }
    // What became of an existing file (Output::note), "" if nothing.
    const std::string& note() const { return out_->note(); }

private:
    void start(const nlohmann::json& meta);
    void append(const void* data, size_t len);
    void flush_block();

    std::unique_ptr<Output> owned_;
    Output* out_ = nullptr;
    bool finished_ = false;
    std::vector<std::byte> block_;
    uint32_t block_records_ = 0;
    uint64_t records_ = 0;
};

class RecordingReader {
public:
    // Throws BadRecording when the file is not a readable recording (not
    // a regular file, no magic, another format, metadata the checksum
    // vouches for that is not what gmemscope writes).  Format 2 metadata
    // that fails its checksum is damage: it costs the metadata, not the
    // events.
    explicit RecordingReader(const std::string& path);
    ~RecordingReader();
    RecordingReader(const RecordingReader&) = delete;
    RecordingReader& operator=(const RecordingReader&) = delete;

    const nlohmann::json& meta() const { return meta_; }
    // The next record; nullopt at the end.  Damage (a bad checksum, a
    // cut, a corrupt record, a missing end) does not throw: a damaged
    // block is walked record by record while each record's header is
    // plausible, what follows is skipped to the next block, and damage()
    // says what was lost.  Work and memory follow the file's content, not
    // its size fields: holes are skipped (SEEK_DATA) and the file is read
    // through a window of at most kWindowBytes.
    std::optional<Event> next();
    // Whether the record next() returned last comes from a block that
    // failed its check (its bytes are not vouched for).
    bool salvaged() const { return last_salvaged_; }
    uint64_t offset() const { return offset_; }
    uint32_t version() const { return version_; }
    // Everything that could not be read, in file order; empty when the
    // recording is whole (its final counters record included).
    const std::vector<Damage>& damage() const { return damage_; }
    // One line for a user: where, how much, why, and what was read.
    std::string damage_text() const;
    // The same for report --json (summary.schema.json's "damage"); null when whole.
    nlohmann::json damage_json() const;
    uint64_t records_read() const { return records_read_; }
    // Of them, those read from blocks that failed their check.
    uint64_t records_salvaged() const { return records_salvaged_; }
    // The last counters record read, if any: what had been received and lost by then.
    const std::optional<gms_drops_record>& last_counters() const { return last_counters_; }

    static constexpr size_t kWindowBytes = 256 << 10;

private:
    void read_header();
    std::optional<Event> next_v1();
    std::optional<Event> next_v2();
    void lose(Damage d);
    void lose(uint64_t offset, uint64_t bytes, std::string cause, std::string why);
    // Up to `len` bytes at `at` (fewer at the end of the file), valid
    // until the next call; read through the window.
    std::span<const std::byte> bytes_at(uint64_t at, size_t len);
    // The next place at or after `from` where a block starts, or size_.
    uint64_t resync(uint64_t from);
    bool block_starts(uint64_t at);
    // Takes the block at offset_: its records become next()'s, its damage is said.
    void open_block();
    void on_counters(const gms_drops_record& c, uint64_t at);

    std::string path_;
    int fd_ = -1;
    uint64_t size_ = 0;
    std::vector<std::byte> window_;
    uint64_t window_at_ = 0;
    uint32_t version_ = 0;
    nlohmann::json meta_ = nlohmann::json::object();
    uint64_t offset_ = 0;
    // v2: the current block's walkable records end at walk_end_; then the
    // pending damage (if any) is said and reading goes on at next_block_.
    uint64_t walk_end_ = 0;
    uint64_t next_block_ = 0;
    bool block_salvaged_ = false;
    std::optional<Damage> block_damage_;
    bool last_salvaged_ = false;
    bool ended_ = false;
    bool final_seen_ = false;
    bool cut_ = false;   // the file ends inside a block or a record
    std::vector<Damage> damage_;
    uint64_t records_read_ = 0;
    uint64_t records_salvaged_ = 0;
    std::optional<gms_drops_record> last_counters_;
    // Since the last counters record: its offset, the events read and the
    // damage said (by index); the recorder writes every event it receives.
    uint64_t counters_at_ = 0;
    uint64_t events_since_counters_ = 0;
    size_t damage_since_counters_ = 0;
};

}  // namespace gms
