#include "loader/capture/recording.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace gms {
namespace {

struct FileHeader {
    char magic[8];
    uint32_t version;
    uint32_t abi;
    uint32_t meta_bytes;  // JSON, padded with spaces to a multiple of 8
    uint32_t crc;         // format 2: CRC32C of this header (crc 0) and the metadata
};
static_assert(sizeof(FileHeader) == 24);

// Format 2: records come in blocks.  The CRC covers this header (crc 0)
// and the records, so a flipped bit anywhere is found.
struct BlockHeader {
    uint32_t magic;
    uint32_t bytes;     // of records after this header
    uint32_t records;
    uint32_t crc;
};
static_assert(sizeof(BlockHeader) == 16);
constexpr uint32_t kBlockMagic = 0x42534d47;   // "GMSB"
constexpr size_t kBlockBytes = 64 << 10;
constexpr size_t kAlign = 8;                   // records, metadata and blocks are 8-byte multiples

std::array<uint32_t, 256> crc_table()
{
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
        t[i] = c;
    }
    return t;
}

uint32_t header_crc(FileHeader h, std::span<const std::byte> meta)
{
    h.crc = 0;
    return crc32c(meta, crc32c(std::as_bytes(std::span{&h, 1})));
}

// Fuzzing builds accept any checksum, so that the fuzzer reaches what
// comes after it (libFuzzer convention, FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION).
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
constexpr bool kCheckCrc = false;
#else
constexpr bool kCheckCrc = true;
#endif

uint32_t block_crc(BlockHeader b, std::span<const std::byte> records)
{
    b.crc = 0;
    return crc32c(records, crc32c(std::as_bytes(std::span{&b, 1})));
}

std::string kind_of(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m) || S_ISBLK(m))
        return "a device";
    return "not a regular file";
}

// What a metadata key must be; a recording that says otherwise is corrupt.
void check_meta(const std::string& path, const nlohmann::json& m)
{
    using V = nlohmann::json::value_t;
    auto want = [&](const char* key, bool ok, const char* what) {
        if (m.contains(key) && !ok)
            throw BadRecording(path, sizeof(FileHeader),
                               fmt::format("metadata: \"{}\" is {} ({}), want {}", key, m[key].type_name(),
                                           m[key].dump().substr(0, 60), what));
    };
    auto is = [&](const char* key, V t) { return m.contains(key) && m[key].type() == t; };
    auto array_of = [&](const char* key, auto&& each) {
        if (!m.contains(key) || !m[key].is_array())
            return false;
        for (const auto& e : m[key])
            if (!each(e))
                return false;
        return true;
    };
    for (const char* k : {"format", "kernel", "clock"})
        want(k, is(k, V::string), "a string");
    for (const char* k : {"start_monotonic_ns", "start_realtime_ns"})
        want(k, is(k, V::number_unsigned), "a non-negative integer");
    want("command", array_of("command", [](const auto& e) { return e.is_string(); }), "an array of strings");
    want("vms", array_of("vms", [](const auto& e) { return e.is_string(); }), "an array of strings");
    want("pids", array_of("pids", [](const auto& e) { return e.is_number_integer(); }), "an array of integers");
    want("attached", array_of("attached", [](const auto& e) { return e.is_object(); }), "an array of objects");
}

}  // namespace

uint32_t crc32c(std::span<const std::byte> data, uint32_t crc)
{
    static const std::array<uint32_t, 256> table = crc_table();
    crc = ~crc;
    for (std::byte b : data)
        crc = table[(crc ^ uint32_t(b)) & 0xff] ^ (crc >> 8);
    return ~crc;
}

BadRecording::BadRecording(const std::string& path, uint64_t off, const std::string& why)
    : std::runtime_error(fmt::format("{}: offset {}: {}", path, off, why)), offset(off)
{
}

RecordingWriter::RecordingWriter(Output& out, const nlohmann::json& meta) : out_(&out)
{
    start(meta);
}

RecordingWriter::RecordingWriter(const std::string& path, const nlohmann::json& meta, bool overwrite)
    : owned_(std::make_unique<Output>(path, overwrite ? Output::Existing::replace : Output::Existing::keep_old)),
      out_(owned_.get())
{
    start(meta);
}

void RecordingWriter::start(const nlohmann::json& meta)
{
    std::string m = dump_line(meta);   // a command line may hold invalid UTF-8
    m.resize((m.size() + kAlign - 1) / kAlign * kAlign, ' ');
    FileHeader h{};
    std::memcpy(h.magic, kRecordingMagic, sizeof(h.magic));
    h.version = kRecordingVersion;
    h.abi = GMS_ABI_VERSION;
    h.meta_bytes = static_cast<uint32_t>(m.size());
    h.crc = header_crc(h, std::as_bytes(std::span{m}));
    out_->write(&h, sizeof(h));
    out_->write(m.data(), m.size());
    // As perf record does: the recording has its name from the start.
    out_->publish();
    block_.reserve(kBlockBytes + 4096);
}

RecordingWriter::~RecordingWriter()
{
    if (finished_)
        return;
    // Ended by an error: what was recorded still goes to the file (a
    // reader sees the missing end and says so).
    try {
        flush_block();
    } catch (const std::exception&) {
    }
}

void RecordingWriter::append(const void* data, size_t len)
{
    auto* p = static_cast<const std::byte*>(data);
    block_.insert(block_.end(), p, p + len);
    block_records_++;
}

void RecordingWriter::flush_block()
{
    if (block_.empty())
        return;
    BlockHeader b{kBlockMagic, uint32_t(block_.size()), block_records_, 0};
    b.crc = block_crc(b, block_);
    std::vector<std::byte> out(sizeof(b) + block_.size());
    std::memcpy(out.data(), &b, sizeof(b));
    std::memcpy(out.data() + sizeof(b), block_.data(), block_.size());
    block_.clear();
    block_records_ = 0;
    // One write per block: a full disk cuts the file at a block boundary
    // or inside the last block, never inside an earlier one.
    out_->write(out.data(), out.size());
}

void RecordingWriter::write(const Event& ev)
{
    std::visit([this](const auto& r) { append(&r, sizeof(r)); }, ev.rec);
    records_++;
    if (ev.type() == GMS_REC_DROPS || block_.size() >= kBlockBytes)
        flush_block();
}

void RecordingWriter::finish(gms_drops_record counters)
{
    counters.hdr.flags |= GMS_F_FINAL;
    append(&counters, sizeof(counters));
    flush_block();
    finished_ = true;
    out_->commit();
}

RecordingReader::RecordingReader(const std::string& path) : path_(path)
{
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        throw std::runtime_error(fmt::format("cannot read {}: {}", path, strerror(errno)));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        throw BadRecording(path, 0, fmt::format("{}, not a recording file", kind_of(st.st_mode)));
    }
    size_ = size_t(st.st_size);
    void* map = size_ ? mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0) : nullptr;
    close(fd);
    if (map == MAP_FAILED)
        throw std::runtime_error(fmt::format("cannot map {}: {}", path, strerror(errno)));
    data_ = static_cast<const std::byte*>(map);
    if (size_)
        madvise(map, size_, MADV_SEQUENTIAL);
    FileHeader h{};
    if (size_ < sizeof(h))
        throw BadRecording(path, 0, "shorter than a recording header: not a gmemscope recording");
    std::memcpy(&h, data_, sizeof(h));
    if (std::memcmp(h.magic, kRecordingMagic, sizeof(h.magic)) != 0)
        throw BadRecording(path, 0, "no gmemscope magic: not a gmemscope recording");
    if ((h.version != 1 && h.version != kRecordingVersion) || h.abi != GMS_ABI_VERSION)
        throw BadRecording(path, 8, fmt::format("format {} ABI {}; this gmemscope reads formats 1 and {}, ABI {}",
                                                h.version, h.abi, kRecordingVersion, GMS_ABI_VERSION));
    version_ = h.version;
    if (size_ - sizeof(h) < h.meta_bytes)
        throw BadRecording(path, sizeof(h), fmt::format("metadata cut short ({} of {} bytes)", size_ - sizeof(h),
                                                        h.meta_bytes));
    std::span<const std::byte> meta{data_ + sizeof(h), h.meta_bytes};
    if (version_ >= 2 && (h.meta_bytes % kAlign || (kCheckCrc && header_crc(h, meta) != h.crc)))
        throw BadRecording(path, 0, "header or metadata checksum mismatch: the recording is damaged");
    meta_ = nlohmann::json::parse(reinterpret_cast<const char*>(meta.data()),
                                  reinterpret_cast<const char*>(meta.data() + meta.size()), nullptr, false);
    if (meta_.is_discarded() || !meta_.is_object())
        throw BadRecording(path, sizeof(h), "metadata is not a JSON object");
    check_meta(path, meta_);
    offset_ = block_end_ = sizeof(h) + h.meta_bytes;
}

RecordingReader::~RecordingReader()
{
    if (data_)
        munmap(const_cast<std::byte*>(data_), size_);
}

void RecordingReader::lose(uint64_t offset, uint64_t bytes, std::string why)
{
    damage_.push_back({offset, bytes, std::move(why)});
}

std::string RecordingReader::damage_text() const
{
    if (damage_.empty())
        return "";
    uint64_t lost = 0;
    for (const auto& d : damage_)
        lost += d.bytes;
    std::string where;
    for (size_t i = 0; i < damage_.size() && i < 3; i++)
        where += fmt::format("{}offset {}: {}{}", i ? "; " : "", damage_[i].offset, damage_[i].why,
                             damage_[i].bytes ? fmt::format(" ({} bytes lost)", damage_[i].bytes) : "");
    if (damage_.size() > 3)
        where += fmt::format("; and {} more", damage_.size() - 3);
    std::string counters = "; no counters record was read, so how many events were lost is unknown";
    if (last_counters_) {
        uint64_t dropped = 0;
        for (auto n : last_counters_->dropped)
            dropped += n;
        counters = fmt::format("; the last counters read say {} events received and {} lost in the kernel by then",
                               last_counters_->received, dropped);
    }
    return fmt::format("{}: damaged recording: {} bytes could not be read ({}); the {} records before and "
                       "between the damage were read{}",
                       path_, lost, where, records_read_, counters);
}

bool RecordingReader::block_ok(uint64_t at) const
{
    BlockHeader b{};
    if (size_ - at < sizeof(b))
        return false;
    std::memcpy(&b, data_ + at, sizeof(b));
    return b.magic == kBlockMagic && b.bytes % kAlign == 0 && b.bytes <= size_ - at - sizeof(b) &&
           (!kCheckCrc || block_crc(b, {data_ + at + sizeof(b), b.bytes}) == b.crc);
}

uint64_t RecordingReader::resync(uint64_t from) const
{
    for (uint64_t at = (from + kAlign - 1) / kAlign * kAlign; at + sizeof(BlockHeader) <= size_; at += kAlign) {
        uint32_t magic;
        std::memcpy(&magic, data_ + at, sizeof(magic));
        if (magic == kBlockMagic && block_ok(at))
            return at;
    }
    return size_;
}

std::optional<Event> RecordingReader::next()
{
    if (ended_)
        return std::nullopt;
    auto ev = version_ == 1 ? next_v1() : next_v2();
    if (ev) {
        records_read_++;
        if (ev->type() == GMS_REC_DROPS)
            last_counters_ = std::get<gms_drops_record>(ev->rec);
        return ev;
    }
    ended_ = true;
    if (!final_seen_) {
        std::string why = "no final counters record: the recording was cut short (the recorder was killed or the "
                          "disk filled)";
        if (damage_.empty() || damage_.back().offset + damage_.back().bytes != size_)
            lose(size_, 0, "ends with " + why);
        else
            damage_.back().why += "; " + why;
    }
    return std::nullopt;
}

// Format 1: records one after the other; damage ends the reading.
std::optional<Event> RecordingReader::next_v1()
{
    if (offset_ == size_)
        return std::nullopt;
    if (final_seen_) {
        lose(offset_, size_ - offset_, "data after the final counters record");
        return std::nullopt;
    }
    size_t left = size_ - offset_;
    gms_hdr h{};
    if (left < sizeof(h)) {
        lose(offset_, left, fmt::format("truncated record header ({} of {} bytes)", left, sizeof(h)));
        return std::nullopt;
    }
    std::memcpy(&h, data_ + offset_, sizeof(h));
    size_t want = record_size(h.type);
    if (want == 0 || h.size != want) {
        lose(offset_, left, fmt::format("corrupt record: type {} size {}", h.type, h.size));
        return std::nullopt;
    }
    if (left < want) {
        lose(offset_, left, fmt::format("truncated {} record ({} of {} bytes)", event_name(h.type), left, want));
        return std::nullopt;
    }
    std::string why;
    auto ev = decode({data_ + offset_, want}, why);
    if (!ev) {
        lose(offset_, left, "corrupt record: " + why);
        return std::nullopt;
    }
    offset_ += want;
    if (h.type == GMS_REC_DROPS && (h.flags & GMS_F_FINAL))
        final_seen_ = true;
    return ev;
}

// Format 2: records inside checksummed blocks; a damaged block is
// skipped to the next intact one.
std::optional<Event> RecordingReader::next_v2()
{
    for (;;) {
        if (offset_ < block_end_) {
            gms_hdr h{};
            size_t left = block_end_ - offset_;
            std::string why;
            std::optional<Event> ev;
            if (left >= sizeof(h)) {
                std::memcpy(&h, data_ + offset_, sizeof(h));
                size_t want = record_size(h.type);
                if (want && h.size == want && want <= left)
                    ev = decode({data_ + offset_, want}, why);
                else
                    why = fmt::format("type {} size {} in a block with {} bytes left", h.type, h.size, left);
            } else {
                why = fmt::format("{} bytes at the end of a block", left);
            }
            // The block's checksum held: the writer wrote this.
            if (!ev) {
                lose(offset_, left, "corrupt record in an intact block: " + why);
                offset_ = block_end_;
                continue;
            }
            offset_ += h.size;
            if (h.type == GMS_REC_DROPS && (h.flags & GMS_F_FINAL)) {
                final_seen_ = true;
                if (offset_ != size_) {
                    lose(offset_, size_ - offset_, "data after the final counters record");
                    offset_ = block_end_ = size_;
                }
            }
            return ev;
        }
        if (offset_ >= size_)
            return std::nullopt;
        if (block_ok(offset_)) {
            BlockHeader b{};
            std::memcpy(&b, data_ + offset_, sizeof(b));
            offset_ += sizeof(b);
            block_end_ = offset_ + b.bytes;
            continue;
        }
        // Say why, then go on at the next intact block.
        BlockHeader b{};
        size_t left = size_ - offset_;
        std::string why;
        if (left < sizeof(b)) {
            why = fmt::format("truncated block header ({} of {} bytes)", left, sizeof(b));
        } else {
            std::memcpy(&b, data_ + offset_, sizeof(b));
            if (b.magic != kBlockMagic)
                why = "no block here (bad block magic)";
            else if (b.bytes % kAlign || b.bytes > left - sizeof(b))
                why = b.bytes % kAlign ? fmt::format("block length {} is not a multiple of {}", b.bytes, kAlign)
                                       : fmt::format("truncated block ({} of {} bytes)", left - sizeof(b), b.bytes);
            else
                why = fmt::format("block checksum mismatch ({} records)", b.records);
        }
        uint64_t next = resync(offset_ + 1);
        lose(offset_, next - offset_, why);
        offset_ = block_end_ = next;
    }
}

}  // namespace gms
