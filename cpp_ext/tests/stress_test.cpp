// Two-thread stress test of affedge::RingBuffer (ringbuf.hpp): a producer pushes items whose
// payload encodes their sequence number (push and push_many mixed) while a consumer reads
// them with read_new, window + intact and at(). Checks: no torn or out-of-order item is ever
// delivered, every item is either delivered once or counted as an overrun, and windows that
// report intact() hold exactly the expected items. Run under ThreadSanitizer and ASan/UBSan
// by tests/test_ringbuf_sanitizers.py.
// Usage: stress_test [n_items] [capacity] [seed]
#include <atomic>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../ringbuf.hpp"
#include "check.hpp"

using affedge::Mode;
using affedge::RingBuffer;

namespace {

constexpr std::size_t kDim = 4;

// Payload of item s: [s, s + 0.25, s + 0.5, s + 0.75] (exact in float32 for s < 2^22).
inline void fill(std::uint64_t s, float* v) {
    for (std::size_t j = 0; j < kDim; ++j) v[j] = static_cast<float>(s) + 0.25f * static_cast<float>(j);
}
inline double time_of(std::uint64_t s) { return static_cast<double>(s); }

// True iff v is a consistent (untorn) payload; sets *seq.
inline bool decode(const float* v, std::uint64_t* seq) {
    const float base = v[0];
    for (std::size_t j = 0; j < kDim; ++j)
        if (v[j] != base + 0.25f * static_cast<float>(j)) return false;
    *seq = static_cast<std::uint64_t>(base);
    return static_cast<float>(*seq) == base;
}

struct Stats {
    std::uint64_t delivered = 0, gaps = 0, windows_ok = 0, windows_stale = 0, ats = 0;
};

Stats run(std::uint64_t n_items, std::size_t cap, unsigned seed) {
    RingBuffer ring(kDim, cap);
    std::atomic<bool> done{false};

    std::thread producer([&] {
        std::mt19937 rng(seed);
        std::vector<float> vals;
        std::vector<double> ts;
        std::uint64_t s = 0;
        while (s < n_items) {
            const std::uint64_t chunk = std::min<std::uint64_t>(rng() % 40, n_items - s);
            if (chunk <= 1) {
                float v[kDim];
                fill(s, v);
                ring.push(time_of(s), v);
                ++s;
            } else {
                vals.resize(chunk * kDim);
                ts.resize(chunk);
                for (std::uint64_t i = 0; i < chunk; ++i) {
                    fill(s + i, vals.data() + i * kDim);
                    ts[i] = time_of(s + i);
                }
                ring.push_many(chunk, ts.data(), vals.data());
                s += chunk;
            }
        }
        done.store(true, std::memory_order_release);
    });

    Stats st;
    std::mt19937 rng(seed + 1);
    std::vector<double> ts(cap);
    std::vector<float> vals(cap * kDim), wcopy(cap * kDim);
    std::uint64_t expect = 0;  // sequence number the next delivered item may have (at least)
    auto drain = [&] {
        const std::uint64_t before = ring.read_cursor();
        const std::size_t k = ring.read_new(cap, ts.data(), vals.data());
        for (std::size_t i = 0; i < k; ++i) {
            std::uint64_t seq;
            RB_CHECK(decode(vals.data() + i * kDim, &seq), "torn item delivered by read_new");
            RB_CHECK(ts[i] == time_of(seq), "timestamp/payload mismatch (seq %llu)", (unsigned long long)seq);
            RB_CHECK(seq >= expect, "item %llu delivered out of order / twice", (unsigned long long)seq);
            if (i > 0) RB_CHECK(seq == expect, "gap inside one read_new batch");
            st.gaps += seq - expect;
            expect = seq + 1;
        }
        st.delivered += k;
        const std::uint64_t after = ring.read_cursor();
        if (k > 0) RB_CHECK(after == expect, "cursor %llu != next seq %llu", (unsigned long long)after, (unsigned long long)expect);
        RB_CHECK(after >= before, "cursor moved backwards");
        if (after > expect) {  // everything up to the cursor was skipped as lost
            st.gaps += after - expect;
            expect = after;
        }
    };

    while (!done.load(std::memory_order_acquire)) {
        const unsigned op = rng() % 8;
        if (op < 5) {
            drain();
        } else if (op < 7) {  // zero-copy window, read with atomic loads, then validated
            const std::size_t size = ring.size();
            if (size == 0) continue;
            const std::size_t n = 1 + rng() % size;
            const auto w = ring.window(n);
            affedge::detail::load_words(
                wcopy.data(), reinterpret_cast<const std::uint32_t*>(w.values), n * kDim,
                /*wide=*/kDim % 2 == 0);
            if (!ring.intact(w.start_seq)) {
                ++st.windows_stale;
                continue;
            }
            for (std::size_t i = 0; i < n; ++i) {
                std::uint64_t seq;
                RB_CHECK(decode(wcopy.data() + i * kDim, &seq), "torn row in an intact window");
                RB_CHECK(seq == w.start_seq + i, "window row %zu holds item %llu, expected %llu", i,
                         (unsigned long long)seq, (unsigned long long)(w.start_seq + i));
            }
            ++st.windows_ok;
        } else {  // at(): a consistent item at or after the requested one
            const double latest = ring.latest_time();
            if (std::isnan(latest)) continue;
            const double q = latest - static_cast<double>(rng() % cap) + 0.5;
            float v[kDim];
            try {
                ring.at(q, Mode::Previous, v);
            } catch (const affedge::OverrunError&) {
                continue;  // allowed (documented) when the producer laps the query repeatedly
            }
            std::uint64_t seq;
            RB_CHECK(decode(v, &seq), "torn value from at()");
            const auto want = static_cast<std::uint64_t>(std::max(0.0, std::floor(q)));
            RB_CHECK(seq == std::min<std::uint64_t>(want, static_cast<std::uint64_t>(latest)) ||
                         (seq > want && ring.total_pushed() > want + cap - 1),
                     "at(%.1f) gave item %llu", q, (unsigned long long)seq);
            ++st.ats;
        }
    }
    producer.join();
    drain();
    drain();
    RB_CHECK(ring.unread() == 0, "items left unread after draining");
    RB_CHECK(ring.total_pushed() == n_items, "total_pushed");
    RB_CHECK(st.delivered + ring.overruns() == n_items, "delivered %llu + overruns %llu != pushed %llu",
             (unsigned long long)st.delivered, (unsigned long long)ring.overruns(),
             (unsigned long long)n_items);
    RB_CHECK(st.gaps == ring.overruns(), "gaps seen %llu != overruns %llu",
             (unsigned long long)st.gaps, (unsigned long long)ring.overruns());
    return st;
}

}  // namespace

int main(int argc, char** argv) {
    const std::uint64_t n = argc > 1 ? std::stoull(argv[1]) : 2000000ull;
    const std::size_t cap = argc > 2 ? std::stoul(argv[2]) : 256;
    const unsigned seed = argc > 3 ? static_cast<unsigned>(std::stoul(argv[3])) : 7u;
    RB_CHECK(n < (1ull << 22), "n_items must be < 2^22 (payload exact in float32)");
    for (std::size_t c : {cap, cap * 64}) {
        const Stats st = run(n, c, seed);
        std::printf("stress_test cap=%zu: OK delivered=%llu overruns=%llu windows ok/stale=%llu/%llu ats=%llu\n",
                    c, (unsigned long long)st.delivered, (unsigned long long)(n - st.delivered),
                    (unsigned long long)st.windows_ok, (unsigned long long)st.windows_stale,
                    (unsigned long long)st.ats);
    }
    return 0;
}
