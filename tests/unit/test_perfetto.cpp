// The Perfetto export on a SYNTHETIC event stream (built here, not read
// from a kernel): where each record lands, and that none is dropped.
#include <cstring>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "loader/report/perfetto.hpp"
#include "synthetic.hpp"

namespace {

constexpr uint64_t kVm = 0xffff888100002000;
constexpr uint64_t kUaddr = 0x7f0000000000;

}  // namespace

TEST_CASE("export: DMA pin spans in their VM's process, every instant on a thread, no record of an unknown VM dropped",
          "[perfetto]")
{
    std::ostringstream out;
    gms::PerfettoWriter w(out);
    auto create = gms::syn::ioctl(10, GMS_IOC_CREATE_VM, 0, 5, 3);
    create.args.create_vm.vm = kVm;
    w.add({create});
    auto region = gms::syn::ioctl(11, GMS_IOC_SET_MEMORY_REGION2, kVm, 0, 5);
    region.args.region.slot = 1;
    region.args.region.gpa = 1ull << 30;
    region.args.region.size = 64 << 12;
    region.args.region.uaddr = kUaddr;
    w.add({region});
    for (uint16_t op : {GMS_IOC_VFIO_MAP_DMA, GMS_IOC_VFIO_UNMAP_DMA}) {
        auto dma = gms::syn::ioctl(op == GMS_IOC_VFIO_MAP_DMA ? 12 : 20, op, 0, 0, 9);
        dma.args.vfio_dma.vaddr = kUaddr + (4 << 12);
        dma.args.vfio_dma.iova = 0x100000;
        dma.args.vfio_dma.size = 8 << 12;
        w.add({dma});
    }
    auto zap = gms::syn::record<gms_zap_event>(GMS_EV_ZAP_ALL_FAST, 13);
    zap.vm = kVm;
    w.add({zap});
    zap = gms::syn::record<gms_zap_event>(GMS_EV_ZAP_PAGE, 14);
    zap.vm = 0;   // a record of no known VM
    w.add({zap});
    auto call = gms::syn::record<gms_call_event>(GMS_EV_CALL, 15);
    call.fn = GMS_FN_KVM_MMU_NOTIFIER;
    w.add({call});
    w.finish();

    nlohmann::json trace = nlohmann::json::parse(out.str());
    int vm_pid = -1;
    for (const auto& e : trace["traceEvents"])
        if (e["ph"] == "M" && e["name"] == "process_name" &&
            e["args"]["name"].get<std::string>().starts_with("VM ffff888100002000 "))
            vm_pid = e["pid"];
    REQUIRE(vm_pid > 0);
    std::set<std::string> seen;
    size_t spans = 0;
    for (const auto& e : trace["traceEvents"]) {
        INFO(e.dump());
        if (e["ph"] == "b" || e["ph"] == "e") {
            CHECK(e["pid"] == vm_pid);
            spans++;
        }
        if (e["ph"] == "i")
            CHECK(e.contains("tid"));
        if (e["ph"] != "M" && e.contains("args"))
            seen.insert(e["args"].value("type", ""));
    }
    CHECK(spans == 2);
    CHECK(seen.count("zap_all_fast"));
    CHECK(seen.count("zap_page"));
    CHECK(seen.count("call"));
}

// A VFIO dma-buf exported, revoked and restored (SYNTHETIC stream): a
// track of its own in the dma-bufs process, its life a span, the revoke a
// span inside it.
TEST_CASE("export: a dma-buf's life is a track with its revoked span", "[perfetto]")
{
    constexpr uint64_t kBuf = 31, kDev = 0xffff888100550000;
    std::ostringstream out;
    gms::PerfettoWriter w(out);
    auto x = gms::syn::ioctl(1000, GMS_IOC_VFIO_DMA_BUF, 0, 7, 5);
    x.obj = kBuf;
    x.args.dma_buf = {48, 11, 0, 1, 0, 0x100000};
    w.add({x});
    auto move = [&](uint64_t ts, bool revoked, uint64_t dev) {
        auto c = gms::syn::record<gms_call_event>(GMS_EV_CALL, ts);
        c.fn = GMS_FN_VFIO_DMA_BUF_MOVE;
        c.args.dma_buf.flags = revoked;
        c.args.dma_buf.dev = dev;
        w.add({c});
    };
    auto exp = gms::syn::record<gms_call_event>(GMS_EV_CALL, 1010);
    exp.fn = GMS_FN_VFIO_DMA_BUF_EXPORT;
    exp.ino = kBuf;
    exp.ret = 7;
    exp.args.dma_buf.dev = kDev;
    w.add({exp});
    move(3000, true, kDev);
    move(5000, false, kDev);
    move(6000, true, kDev + 1);   // another device
    w.finish();
    auto doc = nlohmann::json::parse(out.str());
    std::vector<nlohmann::json> spans;
    bool named = false;
    for (const auto& e : doc["traceEvents"]) {
        if (e["ph"] == "M" && e["args"]["name"].get<std::string>().starts_with("dma-buf ino 31 (vfio_pci_core BAR0)"))
            named = true;
        if (e["ph"] == "X" && e["cat"] == "dma_buf")
            spans.push_back(e);
    }
    CHECK(named);
    REQUIRE(spans.size() == 2);
    CHECK(spans[0]["name"] == "exported");
    CHECK(spans[0]["ts"] == 0.0);
    CHECK(spans[0]["dur"] == 5.0);   // to the end of the recording, 6000 ns
    CHECK(spans[1]["name"] == "revoked");
    CHECK(spans[1]["ts"] == 2.0);
    CHECK(spans[1]["dur"] == 2.0);
    CHECK(spans[0]["tid"] == spans[1]["tid"]);
}
