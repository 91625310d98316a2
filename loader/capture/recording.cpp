#include "loader/capture/recording.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <array>
#include <cstring>

#include <fmt/format.h>

namespace gms {
namespace {

struct FileHeader {
    char magic[8];
    uint32_t version;
    uint32_t abi;
    uint32_t meta_bytes;  // JSON, padded with spaces to a multiple of 8
    uint32_t reserved;
};
static_assert(sizeof(FileHeader) == 24);

}  // namespace

BadRecording::BadRecording(const std::string& path, uint64_t off, const std::string& why)
    : std::runtime_error(fmt::format("{}: offset {}: {}", path, off, why)), offset(off)
{
}

RecordingWriter::RecordingWriter(const std::string& path, const nlohmann::json& meta) : path_(path)
{
    file_ = std::fopen(path.c_str(), "wb");
    if (!file_)
        throw std::runtime_error(fmt::format("cannot write {}: {}", path, strerror(errno)));
    std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
    std::string m = meta.dump();
    m.resize((m.size() + 7) / 8 * 8, ' ');
    FileHeader h{};
    std::memcpy(h.magic, kRecordingMagic, sizeof(h.magic));
    h.version = kRecordingVersion;
    h.abi = GMS_ABI_VERSION;
    h.meta_bytes = static_cast<uint32_t>(m.size());
    put(&h, sizeof(h));
    put(m.data(), m.size());
}

RecordingWriter::~RecordingWriter()
{
    if (file_)
        std::fclose(file_);
}

void RecordingWriter::put(const void* data, size_t len)
{
    if (std::fwrite(data, 1, len, file_) != len)
        throw std::runtime_error(fmt::format("writing {}: {}", path_, strerror(errno)));
}

void RecordingWriter::write(const Event& ev)
{
    std::visit([this](const auto& r) { put(&r, sizeof(r)); }, ev.rec);
    records_++;
}

void RecordingWriter::finish(gms_drops_record counters)
{
    counters.hdr.flags |= GMS_F_FINAL;
    put(&counters, sizeof(counters));
    if (std::fflush(file_) != 0 || fsync(fileno(file_)) != 0)
        throw std::runtime_error(fmt::format("writing {}: {}", path_, strerror(errno)));
    std::fclose(file_);
    file_ = nullptr;
}

RecordingReader::RecordingReader(const std::string& path) : path_(path)
{
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw std::runtime_error(fmt::format("cannot read {}: {}", path, strerror(errno)));
    struct stat st {};
    fstat(fd, &st);
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
    if (h.version != kRecordingVersion || h.abi != GMS_ABI_VERSION)
        throw BadRecording(path, 8, fmt::format("format {} ABI {}; this gmemscope reads format {} ABI {}",
                                                h.version, h.abi, kRecordingVersion, GMS_ABI_VERSION));
    if (size_ - sizeof(h) < h.meta_bytes)
        throw BadRecording(path, sizeof(h), "metadata cut short");
    meta_ = nlohmann::json::parse(reinterpret_cast<const char*>(data_) + sizeof(h),
                                  reinterpret_cast<const char*>(data_) + sizeof(h) + h.meta_bytes, nullptr, false);
    if (meta_.is_discarded() || !meta_.is_object())
        throw BadRecording(path, sizeof(h), "metadata is not a JSON object");
    offset_ = sizeof(h) + h.meta_bytes;
}

RecordingReader::~RecordingReader()
{
    if (data_)
        munmap(const_cast<std::byte*>(data_), size_);
}

std::optional<Event> RecordingReader::next()
{
    if (ended_)
        return std::nullopt;
    size_t left = size_ - offset_;
    if (left == 0)
        throw BadRecording(path_, offset_,
                           "ends without its final counters record: the recording was cut short "
                           "(the recorder was killed or the disk filled)");
    gms_hdr h{};
    if (left < sizeof(h))
        throw BadRecording(path_, offset_, fmt::format("truncated record header ({} of {} bytes)", left, sizeof(h)));
    std::memcpy(&h, data_ + offset_, sizeof(h));
    size_t want = record_size(h.type);
    if (want == 0 || h.size != want)
        throw BadRecording(path_, offset_, fmt::format("corrupt record: type {} size {}", h.type, h.size));
    if (left < want)
        throw BadRecording(path_, offset_,
                           fmt::format("truncated {} record ({} of {} bytes)", event_name(h.type), left, want));
    std::string why;
    auto ev = decode({data_ + offset_, want}, why);
    if (!ev)
        throw BadRecording(path_, offset_, "corrupt record: " + why);
    offset_ += want;
    if (h.type == GMS_REC_DROPS && (h.flags & GMS_F_FINAL)) {
        ended_ = true;
        if (offset_ != size_)
            throw BadRecording(path_, offset_, "data after the final counters record");
    }
    return ev;
}

}  // namespace gms
