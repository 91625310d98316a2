#include "loader/capture/recording.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

// Fuzzing builds take a stored checksum of 0 as the only wrong one, so
// that the fuzzer reaches both what comes after a checksum and the
// salvage of what fails it (libFuzzer convention,
// FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION).
bool crc_matches(uint32_t stored, uint32_t computed)
{
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    (void)computed;
    return stored != 0;
#else
    return stored == computed;
#endif
}

// The writer ends a block once it holds kBlockBytes, so one holds less
// than that plus a record (whose size is 16 bits); metadata is a JSON
// line of a few KiB.  Larger size fields are damage, never allocated.
constexpr size_t kMaxBlockBytes = kBlockBytes + (64 << 10);
constexpr size_t kMaxMetaBytes = 16 << 20;

// A whole record at the start of `rec` whose header the writer could have written.
bool plausible(std::span<const std::byte> rec)
{
    gms_hdr h{};
    if (rec.size() < sizeof(h))
        return false;
    std::memcpy(&h, rec.data(), sizeof(h));
    return h.abi == GMS_ABI_VERSION && record_size(h.type) != 0 && h.size == record_size(h.type) &&
           h.size <= rec.size();
}

struct Walk {
    size_t bytes = 0;       // of plausible records from the start
    uint32_t records = 0;
    bool final = false;     // the last of them is the final counters record
};

// Record by record while each is plausible; a final counters record ends
// the recording.
Walk walk(std::span<const std::byte> recs)
{
    Walk w;
    while (!w.final && plausible(recs.subspan(w.bytes))) {
        gms_hdr h{};
        std::memcpy(&h, recs.data() + w.bytes, sizeof(h));
        w.bytes += h.size;
        w.records++;
        w.final = h.type == GMS_REC_DROPS && (h.flags & GMS_F_FINAL);
    }
    return w;
}

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
    fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0)
        throw std::runtime_error(fmt::format("cannot read {}: {}", path, strerror(errno)));
    struct stat st {};
    if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd_);
        throw BadRecording(path, 0, fmt::format("{}, not a recording file", kind_of(st.st_mode)));
    }
    size_ = uint64_t(st.st_size);
    posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
    try {
        read_header();
    } catch (...) {
        close(fd_);
        throw;
    }
}

void RecordingReader::read_header()
{
    FileHeader h{};
    auto head = bytes_at(0, sizeof(h));
    if (head.size() < sizeof(h))
        throw BadRecording(path_, 0, "shorter than a recording header: not a gmemscope recording");
    std::memcpy(&h, head.data(), sizeof(h));
    if (std::memcmp(h.magic, kRecordingMagic, sizeof(h.magic)) != 0)
        throw BadRecording(path_, 0, "no gmemscope magic: not a gmemscope recording");
    if ((h.version != 1 && h.version != kRecordingVersion) || h.abi != GMS_ABI_VERSION)
        throw BadRecording(path_, 8, fmt::format("format {} ABI {}; this gmemscope reads formats 1 and {}, ABI {}",
                                                 h.version, h.abi, kRecordingVersion, GMS_ABI_VERSION));
    version_ = h.version;
    uint64_t left = size_ - sizeof(h);
    bool fits = h.meta_bytes <= left && h.meta_bytes <= kMaxMetaBytes;
    std::string meta;
    if (fits) {
        auto m = bytes_at(sizeof(h), h.meta_bytes);
        meta.assign(reinterpret_cast<const char*>(m.data()), m.size());
    }
    if (version_ >= 2 && (!fits || h.meta_bytes % kAlign ||
                          !crc_matches(h.crc, header_crc(h, std::as_bytes(std::span{meta}))))) {
        // Blocks carry their own checksums and are found by their own
        // headers: the events are still read.
        uint64_t first = resync(sizeof(h));
        lose(Damage{sizeof(h), first - sizeof(h), "metadata",
                    fmt::format("header or metadata checksum mismatch ({} bytes of metadata claimed): the metadata "
                                "(kernel, clock, hooks attached) is lost, the blocks after it are read",
                                h.meta_bytes),
                    0, 0});
        offset_ = next_block_ = walk_end_ = first;
        return;
    }
    if (!fits)
        throw BadRecording(path_, sizeof(h),
                           h.meta_bytes > left
                               ? fmt::format("metadata cut short ({} of {} bytes)", left, h.meta_bytes)
                               : fmt::format("{} bytes of metadata, more than gmemscope writes", h.meta_bytes));
    meta_ = nlohmann::json::parse(meta, nullptr, false);
    if (meta_.is_discarded() || !meta_.is_object())
        throw BadRecording(path_, sizeof(h), "metadata is not a JSON object");
    check_meta(path_, meta_);
    offset_ = next_block_ = walk_end_ = sizeof(h) + h.meta_bytes;
    if (window_.capacity() > 2 * kWindowBytes)
        std::vector<std::byte>().swap(window_);   // a large metadata's window goes
}

RecordingReader::~RecordingReader()
{
    close(fd_);
}

std::span<const std::byte> RecordingReader::bytes_at(uint64_t at, size_t len)
{
    if (at >= size_)
        return {};
    len = size_t(std::min<uint64_t>(len, size_ - at));
    if (at < window_at_ || at + len > window_at_ + window_.size()) {
        size_t want = size_t(std::min<uint64_t>(std::max(len, kWindowBytes), size_ - at));
        window_.resize(want);
        size_t got = 0;
        while (got < want) {
            ssize_t n = pread(fd_, window_.data() + got, want - got, off_t(at + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                throw std::runtime_error(fmt::format("reading {} at offset {}: {}", path_, at + got, strerror(errno)));
            if (n == 0)
                break;   // shrunk under us: what is there is what there is
            got += size_t(n);
        }
        window_.resize(got);
        window_at_ = at;
        len = std::min(len, got);
    }
    return {window_.data() + (at - window_at_), len};
}

void RecordingReader::lose(Damage d)
{
    damage_.push_back(std::move(d));
}

void RecordingReader::lose(uint64_t offset, uint64_t bytes, std::string cause, std::string why)
{
    lose(Damage{offset, bytes, std::move(cause), std::move(why), std::nullopt, 0});
}

namespace {

struct Loss {
    uint64_t bytes = 0, records = 0, unknown_bytes = 0, salvaged = 0;
};

Loss total(const std::vector<Damage>& damage)
{
    Loss l;
    for (const auto& d : damage) {
        l.bytes += d.bytes;
        l.salvaged += d.records_salvaged;
        if (d.records_lost)
            l.records += *d.records_lost;
        else
            l.unknown_bytes += d.bytes;
    }
    return l;
}

}  // namespace

std::string RecordingReader::damage_text() const
{
    if (damage_.empty())
        return "";
    Loss l = total(damage_);
    std::string where;
    for (size_t i = 0; i < damage_.size() && i < 3; i++) {
        const Damage& d = damage_[i];
        std::string lost;
        if (d.bytes)
            lost = fmt::format("{} bytes", d.bytes);
        if (d.records_lost)
            lost += fmt::format("{}{} records", lost.empty() ? "" : ", ", *d.records_lost);
        where += fmt::format("{}offset {}: {}{}", i ? "; " : "", d.offset, d.why,
                             lost.empty() ? "" : " (" + lost + " lost)");
    }
    if (damage_.size() > 3)
        where += fmt::format("; and {} more", damage_.size() - 3);
    std::string records = fmt::format("; {} records lost", l.records);
    if (l.unknown_bytes)
        records += fmt::format(" and how many in the other {} bytes is unknown", l.unknown_bytes);
    if (l.salvaged)
        records += fmt::format("; {} records were read back from blocks that failed their check", l.salvaged);
    std::string counters = "; no counters record was read, so how many events were lost is unknown";
    if (last_counters_) {
        uint64_t dropped = 0;
        for (auto n : last_counters_->dropped)
            dropped += n;
        counters = fmt::format("; the last counters read say {} events received and {} lost in the kernel by then",
                               last_counters_->received, dropped);
    }
    return fmt::format("{}: damaged recording: {} bytes could not be read ({}){}; the {} records before and "
                       "between the damage were read{}",
                       path_, l.bytes, where, records, records_read_, counters);
}

nlohmann::json RecordingReader::damage_json() const
{
    if (damage_.empty())
        return nullptr;
    Loss l = total(damage_);
    auto stretches = nlohmann::json::array();
    for (const auto& d : damage_) {
        nlohmann::json s = {{"offset", d.offset}, {"bytes", d.bytes}, {"cause", d.cause}, {"why", d.why},
                            {"records_salvaged", d.records_salvaged}};
        if (d.records_lost)
            s["records_lost"] = *d.records_lost;
        stretches.push_back(std::move(s));
    }
    return {{"message", damage_text()},  {"bytes_lost", l.bytes},
            {"records_lost", l.records}, {"bytes_lost_uncounted", l.unknown_bytes},
            {"records_read", records_read_}, {"records_salvaged", records_salvaged_},
            {"stretches", std::move(stretches)}};
}

std::optional<Event> RecordingReader::next()
{
    if (ended_)
        return std::nullopt;
    auto ev = version_ == 1 ? next_v1() : next_v2();
    if (ev) {
        records_read_++;
        records_salvaged_ += last_salvaged_;
        if (ev->type() == GMS_REC_DROPS)
            last_counters_ = std::get<gms_drops_record>(ev->rec);
        else
            events_since_counters_++;
        return ev;
    }
    ended_ = true;
    if (!final_seen_) {
        const char* cut = "no final counters record: the recording was cut short (the recorder was killed or the "
                          "disk filled)";
        if (cut_)
            damage_.back().why += fmt::format("; {}", cut);
        else if (damage_.empty() || damage_.back().offset + damage_.back().bytes != size_)
            lose(size_, 0, "no_end", fmt::format("ends with {}", cut));
        else
            damage_.back().why += "; the final counters record was not read";
    }
    return std::nullopt;
}

// The recorder writes every event it receives (Tracer::on_record), and a
// counters record says how many it had received by then: damage between
// two counters records is counted in records from them.
void RecordingReader::on_counters(const gms_drops_record& c, uint64_t at)
{
    uint64_t before = last_counters_ ? last_counters_->received : 0;
    uint64_t sent = c.received >= before ? c.received - before : 0;
    if (sent > events_since_counters_) {
        uint64_t missing = sent - events_since_counters_;
        std::vector<Damage*> unknown;
        for (size_t i = damage_since_counters_; i < damage_.size(); i++)
            if (damage_[i].cause != "metadata")
                unknown.push_back(&damage_[i]);
        if (unknown.size() == 1) {
            unknown[0]->records_lost = missing;
        } else if (unknown.empty()) {
            // Nothing in the file shows it: whole blocks are missing.
            lose(Damage{at, 0, "missing_records",
                        fmt::format("{} records that the counters record here counts since offset {} are not in the "
                                    "file",
                                    missing, counters_at_),
                        missing, 0});
        } else {
            for (auto* d : unknown)
                d->records_lost.reset();
            unknown.front()->records_lost = missing;
            unknown.front()->why += fmt::format(" (the records lost count the damage up to offset {})", at);
        }
    }
    counters_at_ = at;
    events_since_counters_ = 0;
    damage_since_counters_ = damage_.size();
}

// Format 1: records one after the other; damage ends the reading.
std::optional<Event> RecordingReader::next_v1()
{
    if (offset_ == size_)
        return std::nullopt;
    if (final_seen_) {
        lose(offset_, size_ - offset_, "after_final", "data after the final counters record");
        return std::nullopt;
    }
    auto rec = bytes_at(offset_, sizeof(gms_hdr));
    gms_hdr h{};
    if (rec.size() < sizeof(h)) {
        lose(offset_, rec.size(), "cut_short",
             fmt::format("truncated record header ({} of {} bytes)", rec.size(), sizeof(h)));
        cut_ = true;
        return std::nullopt;
    }
    std::memcpy(&h, rec.data(), sizeof(h));
    size_t want = record_size(h.type);
    if (want == 0 || h.size != want) {
        lose(offset_, size_ - offset_, "corrupt_record", fmt::format("corrupt record: type {} size {}", h.type, h.size));
        return std::nullopt;
    }
    rec = bytes_at(offset_, want);
    if (rec.size() < want) {
        lose(offset_, rec.size(), "cut_short",
             fmt::format("truncated {} record ({} of {} bytes)", event_name(h.type), rec.size(), want));
        cut_ = true;
        return std::nullopt;
    }
    std::string why;
    auto ev = decode(rec, why);
    if (!ev) {
        lose(offset_, size_ - offset_, "corrupt_record", "corrupt record: " + why);
        return std::nullopt;
    }
    if (h.type == GMS_REC_DROPS) {
        on_counters(std::get<gms_drops_record>(ev->rec), offset_);
        final_seen_ = h.flags & GMS_F_FINAL;
    }
    offset_ += want;
    return ev;
}

// Where the writer's next block would be, or the reader lost its way: a
// block header with the block magic and plausible sizes, followed by a
// plausible record.
bool RecordingReader::block_starts(uint64_t at)
{
    auto head = bytes_at(at, sizeof(BlockHeader));
    BlockHeader b{};
    if (head.size() < sizeof(b))
        return false;
    std::memcpy(&b, head.data(), sizeof(b));
    if (b.magic != kBlockMagic || b.bytes % kAlign || !b.bytes || b.bytes > kMaxBlockBytes)
        return false;
    // A record is at most 64 KiB (its size is 16 bits).
    return plausible(bytes_at(at + sizeof(b), std::min<size_t>(b.bytes, UINT16_MAX)));
}

uint64_t RecordingReader::resync(uint64_t from)
{
    // A block starts at a multiple of 8; holes (SEEK_DATA) hold none.
    uint64_t at = (from + kAlign - 1) / kAlign * kAlign;
    while (at + sizeof(BlockHeader) <= size_) {
        off_t data = lseek(fd_, off_t(at), SEEK_DATA);
        if (data < 0)
            return size_;   // ENXIO: nothing but a hole from here on
        at = std::max(at, (uint64_t(data) + kAlign - 1) / kAlign * kAlign);
        uint64_t end = std::min(size_, at + kWindowBytes);
        for (; at + sizeof(BlockHeader) <= end; at += kAlign) {
            uint32_t magic = 0;
            auto m = bytes_at(at, sizeof(magic));
            std::memcpy(&magic, m.data(), sizeof(magic));
            if (magic == kBlockMagic && block_starts(at))
                return at;
        }
    }
    return size_;
}

void RecordingReader::open_block()
{
    uint64_t at = offset_;
    BlockHeader b{};
    auto head = bytes_at(at, sizeof(b));
    if (head.size() < sizeof(b)) {
        lose(at, head.size(), "cut_short",
             fmt::format("cut short: the file ends inside a block header ({} of {} bytes)", head.size(), sizeof(b)));
        cut_ = true;
        offset_ = walk_end_ = next_block_ = size_;
        return;
    }
    std::memcpy(&b, head.data(), sizeof(b));
    bool length_ok = b.bytes % kAlign == 0 && b.bytes <= kMaxBlockBytes;
    uint64_t held = std::min<uint64_t>(length_ok ? b.bytes : kMaxBlockBytes, size_ - at - sizeof(b));
    auto recs = bytes_at(at + sizeof(b), size_t(held));
    Walk w = walk(recs);
    // A header whose magic took the hit is still a block when a record follows it.
    if (b.magic != kBlockMagic && w.records == 0) {
        uint64_t next = resync(at + kAlign);
        lose(at, next - at, "no_block", "no block here (bad block magic)");
        offset_ = walk_end_ = next_block_ = next;
        return;
    }
    bool whole = length_ok && b.bytes == held;
    bool crc_ok = whole && b.magic == kBlockMagic && crc_matches(b.crc, block_crc(b, recs));
    uint64_t start = at + sizeof(b);
    offset_ = start;
    walk_end_ = start + w.bytes;
    if (crc_ok && w.bytes == b.bytes && w.records == b.records) {
        block_salvaged_ = false;
        block_damage_.reset();
        next_block_ = walk_end_;
        return;
    }
    block_salvaged_ = true;
    // A claim the block has room for; else only bytes count the loss.
    bool claim_fits = uint64_t(b.records) * sizeof(gms_hdr) <= (length_ok ? b.bytes : 0) && b.records >= w.records;
    std::optional<uint64_t> claimed_lost;
    if (claim_fits)
        claimed_lost = b.records - w.records;
    Damage d{at, 0, "", "", std::nullopt, w.records};
    if (crc_ok) {
        // The checksum holds: the writer wrote this header, and it does not fit its records.
        d.cause = w.bytes == b.bytes ? "record_count" : "corrupt_record";
        d.why = w.bytes == b.bytes
                    ? fmt::format("the block claims {} records{} but holds {}; they were read back", b.records,
                                  claim_fits ? "" : " (more than it has room for)", w.records)
                    : fmt::format("corrupt record at offset {} in a block whose checksum holds; its {} records "
                                  "before it were read back",
                                  walk_end_, w.records);
        next_block_ = start + b.bytes;
        d.bytes = next_block_ - walk_end_;
        if (d.bytes)
            d.offset = walk_end_;
        if (w.bytes != b.bytes)
            d.records_lost = claimed_lost;
        block_damage_ = d;
        return;
    }
    // Its records as the writer would have summed them: if the checksum
    // holds for them, only the header's length, count or magic took the hit.
    BlockHeader fixed{kBlockMagic, uint32_t(w.bytes), w.records, b.crc};
    bool header_hit = w.records && crc_matches(b.crc, block_crc(fixed, recs.first(w.bytes)));
    uint64_t next = header_hit || (whole && w.bytes == b.bytes) ? walk_end_ : resync(walk_end_);
    if (length_ok && !whole && !header_hit && next == size_) {
        d.cause = "cut_short";
        d.offset = walk_end_;
        d.why = fmt::format("cut short: the file ends inside the block at offset {} ({} of its {} bytes); its {} "
                            "whole records were read back",
                            at, held, b.bytes, w.records);
        d.records_lost = claimed_lost;
        cut_ = true;
    } else {
        d.cause = "checksum_mismatch";
        d.why = header_hit ? fmt::format("checksum mismatch in the header of the block at offset {} (its records are "
                                         "intact: all {} were read back)",
                                         at, w.records)
                           : fmt::format("checksum mismatch in the block at offset {}: {} of its records were read "
                                         "back, each with a plausible header",
                                         at, w.records);
        if (header_hit || w.bytes == held)
            d.records_lost = 0;
        else
            d.records_lost = claimed_lost;
    }
    next_block_ = next;
    d.bytes = next - walk_end_;
    if (d.bytes)
        d.offset = walk_end_;   // the lost stretch; the why names the block
    block_damage_ = d;
}

// Format 2: records inside checksummed blocks; a damaged block gives the
// records it still holds, then reading goes on at the next block.
std::optional<Event> RecordingReader::next_v2()
{
    for (;;) {
        if (offset_ < walk_end_) {
            gms_hdr h{};
            std::memcpy(&h, bytes_at(offset_, sizeof(h)).data(), sizeof(h));
            std::string why;
            // walk() found it whole and plausible, which is what decode() checks
            auto ev = decode(bytes_at(offset_, h.size), why);
            if (!ev)
                throw std::logic_error(fmt::format("{}: offset {}: {}", path_, offset_, why));
            if (h.type == GMS_REC_DROPS) {
                on_counters(std::get<gms_drops_record>(ev->rec), offset_);
                final_seen_ = final_seen_ || (h.flags & GMS_F_FINAL);
            }
            offset_ += h.size;
            last_salvaged_ = block_salvaged_;
            return ev;
        }
        if (block_damage_) {
            lose(std::move(*block_damage_));
            block_damage_.reset();
        }
        offset_ = walk_end_ = next_block_;
        if (offset_ >= size_)
            return std::nullopt;
        if (final_seen_) {
            lose(offset_, size_ - offset_, "after_final", "data after the final counters record");
            offset_ = walk_end_ = next_block_ = size_;
            return std::nullopt;
        }
        open_block();
    }
}

}  // namespace gms
