// The recording file: a header (magic, format and ABI versions, JSON
// metadata naming the kernel, the clock and the hooks attached), then
// records byte for byte as the kernel wrote them, then a final counters
// record.  Counters are also written every second, so a recording cut
// short still says what was lost up to then.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/events/events.hpp"

namespace gms {

inline constexpr char kRecordingMagic[8] = {'G', 'M', 'E', 'M', 'S', 'C', 'P', '\0'};
inline constexpr uint32_t kRecordingVersion = 1;

struct BadRecording : std::runtime_error {
    BadRecording(const std::string& path, uint64_t offset, const std::string& why);
    uint64_t offset;
};

class RecordingWriter {
public:
    RecordingWriter(const std::string& path, const nlohmann::json& meta);
    ~RecordingWriter();
    RecordingWriter(const RecordingWriter&) = delete;
    RecordingWriter& operator=(const RecordingWriter&) = delete;

    void write(const Event& ev);
    // Ends the recording: the last counters, flagged final, then fsync.
    void finish(gms_drops_record counters);
    uint64_t records() const { return records_; }

private:
    void put(const void* data, size_t len);

    std::string path_;
    std::FILE* file_ = nullptr;
    uint64_t records_ = 0;
};

class RecordingReader {
public:
    // Throws BadRecording when the header is not a gmemscope recording.
    explicit RecordingReader(const std::string& path);
    ~RecordingReader();
    RecordingReader(const RecordingReader&) = delete;
    RecordingReader& operator=(const RecordingReader&) = delete;

    const nlohmann::json& meta() const { return meta_; }
    // The next record; nullopt at a clean end (after the final counters).
    // Throws BadRecording naming the offset of a truncated or corrupt
    // record, or of a missing end.
    std::optional<Event> next();
    uint64_t offset() const { return offset_; }

private:
    std::string path_;
    const std::byte* data_ = nullptr;   // the whole file, mapped read-only
    size_t size_ = 0;
    nlohmann::json meta_;
    uint64_t offset_ = 0;
    bool ended_ = false;
};

}  // namespace gms
