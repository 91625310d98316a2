// The event ABI: layouts are static_asserted in loader/events/events.hpp; here
// the ioctl numbers BPF matches on, recomputed from the UAPI sizes, and
// the decoder's refusals.
#include <linux/ioctl.h>

#include <array>
#include <cstring>

#include <catch2/catch.hpp>

#include "ioctls.h"
#include "loader/events/events.hpp"

namespace {

template <size_t N>
using Bytes = std::array<char, N>;

}  // namespace

TEST_CASE("ioctl numbers match the UAPI definitions", "[abi]")
{
    CHECK(GMS_KVM_CREATE_VM == _IO(0xAE, 0x01));
    CHECK(GMS_KVM_RUN == _IO(0xAE, 0x80));
    CHECK(GMS_KVM_SET_USER_MEMORY_REGION == _IOW(0xAE, 0x46, Bytes<32>));
    CHECK(GMS_KVM_SET_USER_MEMORY_REGION2 == _IOW(0xAE, 0x49, Bytes<160>));
    CHECK(GMS_KVM_CREATE_GUEST_MEMFD == _IOWR(0xAE, 0xd4, Bytes<64>));
    CHECK(GMS_KVM_SET_MEMORY_ATTRIBUTES == _IOW(0xAE, 0xd2, Bytes<32>));
    CHECK(GMS_KVM_SET_MEMORY_ATTRIBUTES2 == _IOWR(0xAE, 0xd2, Bytes<128>));
    CHECK(GMS_KVM_GMEM_CONVERT_SHARED == _IOWR(0xAF, 0x41, Bytes<64>));
    CHECK(GMS_KVM_GMEM_CONVERT_PRIVATE == _IOWR(0xAF, 0x42, Bytes<64>));
    CHECK(GMS_VFIO_IOMMU_MAP_DMA == _IO(';', 100 + 13));
    CHECK(GMS_VFIO_IOMMU_UNMAP_DMA == _IO(';', 100 + 14));
    CHECK(GMS_VFIO_DEVICE_FEATURE == _IO(';', 100 + 17));
    CHECK(GMS_IOMMU_IOAS_MAP == _IO(';', 0x85));
    CHECK(GMS_IOMMU_IOAS_UNMAP == _IO(';', 0x86));
    CHECK(GMS_IOMMU_IOAS_MAP_FILE == _IO(';', 0x8f));
}

TEST_CASE("every event type has a size, a name and decodes", "[abi]")
{
    for (uint32_t t = 1; t < GMS_EV_MAX; t++) {
        INFO("type " << t);
        size_t size = gms::record_size(t);
        REQUIRE(size >= sizeof(gms_hdr));
        CHECK(size % 8 == 0);
        CHECK(gms::event_name(t) != "unknown");
        std::vector<std::byte> buf(size);
        gms_hdr h{};
        h.type = static_cast<__u16>(t);
        h.abi = GMS_ABI_VERSION;
        h.size = static_cast<__u16>(size);
        std::memcpy(buf.data(), &h, sizeof(h));
        std::string why;
        auto ev = gms::decode(buf, why);
        REQUIRE(ev);
        CHECK(ev->type() == t);
        CHECK(gms::to_json(*ev)["type"] == gms::event_name(t));
    }
}

TEST_CASE("the decoder refuses what is not a record of this ABI", "[abi]")
{
    std::vector<std::byte> buf(sizeof(gms_fault_event));
    gms_hdr h{};
    h.type = GMS_EV_FAULT;
    h.abi = GMS_ABI_VERSION;
    h.size = sizeof(gms_fault_event);
    std::string why;

    auto with = [&](gms_hdr hh, size_t len) {
        std::memcpy(buf.data(), &hh, sizeof(hh));
        return gms::decode(std::span(buf).first(len), why);
    };
    CHECK(with(h, buf.size()));
    CHECK_FALSE(with(h, 20));
    CHECK_THAT(why, Catch::Contains("shorter than a record header"));
    CHECK_FALSE(with(h, buf.size() - 8));
    CHECK_THAT(why, Catch::Contains("expected 96"));
    gms_hdr bad = h;
    bad.abi = GMS_ABI_VERSION + 1;
    CHECK_FALSE(with(bad, buf.size()));
    CHECK_THAT(why, Catch::Contains("ABI version"));
    bad = h;
    bad.type = 77;
    CHECK_FALSE(with(bad, buf.size()));
    CHECK_THAT(why, Catch::Contains("unknown record type 77"));
}
