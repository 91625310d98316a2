// A map from half-open ranges [start, end) of 64-bit keys (gfns, page
// indexes, addresses in pages) to values.  Memory grows with the number
// of distinct ranges, not with the size of the space: adjacent ranges
// whose values continue each other are merged.
//
// A value type may be "linear": it describes its range's first key and
// knows how to move along it (pfn runs, address translations).  It then
// provides
//     V shifted(uint64_t delta) const;            // the value at start + delta
//     bool continues(const V& next, uint64_t len) const;  // next == shifted(len)
// Other value types are constant over their range and merge when equal.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <utility>

namespace gms {

template <typename V>
concept LinearValue = requires(const V& v, uint64_t d) {
    { v == v } -> std::convertible_to<bool>;
    { v.shifted(d) } -> std::convertible_to<V>;
    { v.continues(v, d) } -> std::convertible_to<bool>;
};

template <typename V>
class IntervalMap {
public:
    struct Seg {
        uint64_t end;
        V value;
    };

    void assign(uint64_t start, uint64_t end, const V& v)
    {
        if (start >= end)
            return;
        auto next = segs_.upper_bound(start);
        if (next != segs_.begin()) {
            auto prev = std::prev(next);
            // Already so: nothing to do (a fault on a page known resident).
            if (prev->second.end >= end && at(prev->second.value, start - prev->first) == v)
                return;
            // Exactly one range: its value changes in place (a page's story,
            // fault after fault), no node freed and allocated again.
            if (prev->first == start && prev->second.end == end) {
                prev->second.value = v;
                merge_next(prev);
                if (prev != segs_.begin())
                    merge_next(std::prev(prev));
                return;
            }
            // Continues the range that ends at start (storms move in order):
            // grow it instead of adding a node.
            if (prev->second.end == start && joins(prev->first, prev->second, v)) {
                cut(start, end);
                prev->second.end = end;
                merge_next(prev);
                return;
            }
        }
        auto it = segs_.emplace_hint(cut(start, end), start, Seg{end, v});
        merge_next(it);
        if (it != segs_.begin())
            merge_next(std::prev(it));
    }

    void erase(uint64_t start, uint64_t end)
    {
        if (start < end)
            cut(start, end);
    }

    // The value at key x (moved to x for linear values), or nullptr.
    const V* find(uint64_t x, uint64_t* seg_start = nullptr, uint64_t* seg_end = nullptr) const
    {
        auto it = segs_.upper_bound(x);
        if (it == segs_.begin())
            return nullptr;
        --it;
        if (x >= it->second.end)
            return nullptr;
        if (seg_start)
            *seg_start = it->first;
        if (seg_end)
            *seg_end = it->second.end;
        return &it->second.value;
    }

    // f(start, end, value) for each range overlapping [start, end),
    // clipped to it; linear values are moved to the clipped start.
    template <typename F>
    void overlaps(uint64_t start, uint64_t end, F&& f) const
    {
        auto it = segs_.upper_bound(start);
        if (it != segs_.begin() && std::prev(it)->second.end > start)
            --it;
        for (; it != segs_.end() && it->first < end; ++it) {
            uint64_t s = std::max(start, it->first), e = std::min(end, it->second.end);
            if (s < e)
                f(s, e, at(it->second.value, s - it->first));
        }
    }

    template <typename F>
    void for_each(F&& f) const
    {
        for (const auto& [s, seg] : segs_)
            f(s, seg.end, seg.value);
    }

    size_t segments() const { return segs_.size(); }
    bool empty() const { return segs_.empty(); }

    static V at(const V& v, uint64_t delta)
    {
        if constexpr (LinearValue<V>)
            return v.shifted(delta);
        else
            return v;
    }

private:
    using Iter = typename std::map<uint64_t, Seg>::iterator;

    // Removes [start, end), start < end, with one lookup, trimming the
    // segments it cuts in place; returns the first segment at or after
    // end (where a segment [start, end) goes).
    Iter cut(uint64_t start, uint64_t end)
    {
        auto it = segs_.upper_bound(start);
        if (it != segs_.begin()) {
            auto prev = std::prev(it);
            if (prev->first == start) {
                it = prev;
            } else if (prev->second.end > start) {
                // Starts before start: keeps its head, and its tail past end
                // (a hole inside one range: one node added).
                uint64_t prev_end = std::exchange(prev->second.end, start);
                if (prev_end > end)
                    return segs_.emplace_hint(it, end, Seg{prev_end, at(prev->second.value, end - prev->first)});
            }
        }
        while (it != segs_.end() && it->first < end) {
            if (it->second.end <= end) {
                it = segs_.erase(it);
                continue;
            }
            // Runs past end: keep its tail under a new key, same node.
            auto node = segs_.extract(it++);
            node.mapped().value = at(node.mapped().value, end - node.key());
            node.key() = end;
            return segs_.insert(it, std::move(node));
        }
        return it;
    }

    // Whether the range [start, seg.end) with seg's value goes on as v.
    static bool joins(uint64_t start, const Seg& seg, const V& v)
    {
        if constexpr (LinearValue<V>)
            return seg.value.continues(v, seg.end - start);
        else
            return seg.value == v;
    }

    void merge_next(typename std::map<uint64_t, Seg>::iterator it)
    {
        auto next = std::next(it);
        if (next == segs_.end() || it->second.end != next->first || !joins(it->first, it->second, next->second.value))
            return;
        it->second.end = next->second.end;
        segs_.erase(next);
    }

    std::map<uint64_t, Seg> segs_;
};

}  // namespace gms
