// Randomized single-threaded model check of affedge::RingBuffer (ringbuf.hpp) against a plain
// std::deque model of the same ring. Built and run by tests/test_ringbuf_sanitizers.py under
// -fsanitize=address,undefined and -fsanitize=thread.
// Usage: model_test [n_ops] [seed]
#include <cmath>
#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "../ringbuf.hpp"
#include "check.hpp"

using affedge::Mode;
using affedge::RingBuffer;

namespace {

struct Item {
    double t;
    std::vector<float> v;
};

// The model: what the ring should hold and how the cursor/overrun counters should move.
struct Model {
    std::size_t dim, cap;
    std::deque<Item> items;   // newest <= cap stored items
    std::uint64_t total = 0;  // items ever pushed
    std::uint64_t first = 0;  // seq of the first item after the last clear()
    std::uint64_t cursor = 0, dropped = 0;
    double last_t = -INFINITY;

    std::uint64_t oldest() const { return total - items.size(); }
    void push(double t, const std::vector<float>& v) {
        items.push_back({t, v});
        if (items.size() > cap) items.pop_front();
        ++total;
        last_t = t;
    }
    std::uint64_t overruns() const {
        const std::uint64_t lost_now = total > cap && total - cap > cursor ? total - cap - cursor : 0;
        return dropped + lost_now;
    }
    std::size_t take(std::size_t max_n) {  // returns the model's index of the first item taken
        const std::uint64_t lo = std::max(cursor, oldest());
        dropped += lo - cursor;
        const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(total - lo, max_n));
        cursor = lo + k;
        return k;
    }
    // Reference of sample_at semantics over the stored items (linear scans, no searching).
    std::vector<float> at(double t, Mode mode) const {
        const std::size_t n = items.size();
        std::size_t cnt = 0;  // number of items with time <= t
        while (cnt < n && items[cnt].t <= t) ++cnt;
        if (cnt == 0) return items.front().v;
        if (cnt == n) return items.back().v;
        const Item& a = items[cnt - 1];
        const Item& b = items[cnt];
        if (mode == Mode::Previous) return a.v;
        if (mode == Mode::Nearest) return (b.t - t < t - a.t) ? b.v : a.v;
        const double w = (t - a.t) / (b.t - a.t);
        std::vector<float> out(dim);
        for (std::size_t j = 0; j < dim; ++j)
            out[j] = static_cast<float>((1.0 - w) * a.v[j] + w * b.v[j]);
        return out;
    }
};

void check_state(const RingBuffer& r, const Model& m) {
    RB_CHECK(r.size() == m.items.size(), "size %zu vs %zu", r.size(), m.items.size());
    RB_CHECK(r.total_pushed() == m.total, "total");
    RB_CHECK(r.overruns() == m.overruns(), "overruns %llu vs %llu",
             (unsigned long long)r.overruns(), (unsigned long long)m.overruns());
    RB_CHECK(r.read_cursor() == m.cursor, "cursor");
    if (m.items.empty()) {
        RB_CHECK(std::isnan(r.latest_time()), "latest_time of empty ring");
    } else {
        RB_CHECK(r.latest_time() == m.items.back().t, "latest_time");
        RB_CHECK(r.oldest_time() == m.items.front().t, "oldest_time");
    }
}

}  // namespace

int main(int argc, char** argv) {
    const long n_ops = argc > 1 ? std::stol(argv[1]) : 20000;
    const unsigned seed = argc > 2 ? static_cast<unsigned>(std::stoul(argv[2])) : 1234u;
    std::mt19937_64 rng(seed);
    auto uni = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
    auto irand = [&](long a, long b) { return std::uniform_int_distribution<long>(a, b)(rng); };

    // Constructor errors.
    RB_THROWS(std::invalid_argument, RingBuffer(0, 4));
    RB_THROWS(std::invalid_argument, RingBuffer(4, 0));
    RB_THROWS(std::invalid_argument, affedge::parse_mode("cubic"));

    long checks = 0;
    for (int config = 0; config < 6; ++config) {
        const std::size_t dim = static_cast<std::size_t>(irand(1, 7));
        const std::size_t cap = static_cast<std::size_t>(irand(1, 40));
        const bool reject = config % 2 == 1;
        RingBuffer r(dim, cap, reject);
        Model m{dim, cap, {}};
        double t = uni(-5, 5);
        std::vector<float> buf;
        std::vector<double> tbuf;

        for (long op = 0; op < n_ops / 6; ++op) {
            const long kind = irand(0, 99);
            if (kind < 30) {  // push
                t += uni(1e-3, 0.1);
                buf.resize(dim);
                for (auto& x : buf) x = static_cast<float>(uni(-10, 10));
                r.push(t, buf.data());
                m.push(t, buf);
            } else if (kind < 42) {  // push_many (sometimes longer than the capacity)
                const std::size_t n = static_cast<std::size_t>(irand(0, static_cast<long>(2 * cap + 2)));
                tbuf.resize(n);
                buf.resize(n * dim);
                for (auto& x : buf) x = static_cast<float>(uni(-10, 10));
                for (std::size_t i = 0; i < n; ++i) tbuf[i] = (t += uni(1e-3, 0.1));
                r.push_many(n, tbuf.data(), buf.data());
                for (std::size_t i = 0; i < n; ++i)
                    m.push(tbuf[i], std::vector<float>(buf.begin() + i * dim, buf.begin() + (i + 1) * dim));
            } else if (kind < 50) {  // bad pushes leave the ring unchanged
                const long bad = irand(0, 3);
                buf.assign(dim, 1.0f);
                if (bad == 0) {
                    RB_THROWS(affedge::TimestampError, r.push(m.last_t, buf.data()));
                    RB_THROWS(affedge::TimestampError, r.push(NAN, buf.data()));
                } else if (bad == 1) {  // non-monotonic timestamp in the middle of a batch
                    const std::size_t n = 3;
                    tbuf = {t + 0.01, t + 0.005, t + 0.02};
                    buf.assign(n * dim, 1.0f);
                    RB_THROWS(affedge::TimestampError, r.push_many(n, tbuf.data(), buf.data()));
                } else if (bad == 2 && reject) {
                    buf[dim - 1] = INFINITY;
                    RB_THROWS(std::invalid_argument, r.push(t + 1.0, buf.data()));
                    tbuf = {t + 0.01, t + 0.02};
                    buf.assign(2 * dim, 0.5f);
                    buf[2 * dim - 1] = NAN;
                    RB_THROWS(std::invalid_argument, r.push_many(2, tbuf.data(), buf.data()));
                } else {
                    RB_THROWS(std::invalid_argument, r.window(cap + 1));
                    RB_THROWS(std::invalid_argument, r.window(m.items.size() + 1));
                }
            } else if (kind < 65) {  // window
                const std::size_t n = m.items.empty() ? 0 : static_cast<std::size_t>(irand(0, static_cast<long>(m.items.size())));
                const auto w = r.window(n);
                RB_CHECK(w.n == n && w.start_seq == m.total - n, "window seq");
                RB_CHECK(r.intact(w.start_seq), "fresh window not intact");
                for (std::size_t i = 0; i < n; ++i) {
                    const Item& it = m.items[m.items.size() - n + i];
                    RB_CHECK(w.ts[i] == it.t, "window ts");
                    for (std::size_t j = 0; j < dim; ++j)
                        RB_CHECK(w.values[i * dim + j] == it.v[j], "window value");
                }
                ++checks;
            } else if (kind < 85) {  // at / at_many in every mode
                if (m.items.empty()) {
                    std::vector<float> out(dim);
                    RB_THROWS(std::invalid_argument, r.at(t, Mode::Previous, out.data()));
                    continue;
                }
                const Mode mode = static_cast<Mode>(irand(0, 2));
                const double lo = m.items.front().t - 0.2, hi = m.items.back().t + 0.2;
                std::vector<double> qs(static_cast<std::size_t>(irand(1, 5)));
                for (auto& q : qs) {
                    const long pick = irand(0, 3);  // exact item times and midpoints matter
                    if (pick == 0) q = m.items[static_cast<std::size_t>(irand(0, static_cast<long>(m.items.size()) - 1))].t;
                    else if (pick == 1 && m.items.size() > 1) {
                        const std::size_t i = static_cast<std::size_t>(irand(0, static_cast<long>(m.items.size()) - 2));
                        q = 0.5 * (m.items[i].t + m.items[i + 1].t);
                    } else q = uni(lo, hi);
                }
                std::vector<float> out(qs.size() * dim);
                r.at_many(qs.data(), qs.size(), mode, out.data());
                for (std::size_t k = 0; k < qs.size(); ++k) {
                    const auto ref = m.at(qs[k], mode);
                    for (std::size_t j = 0; j < dim; ++j)
                        RB_CHECK(out[k * dim + j] == ref[j], "at(%.17g, mode %d)[%zu] = %g, model %g",
                                 qs[k], static_cast<int>(mode), j, out[k * dim + j], ref[j]);
                }
                ++checks;
            } else if (kind < 93) {  // read_new
                const std::size_t max_n = static_cast<std::size_t>(irand(0, static_cast<long>(cap + 2)));
                std::vector<double> ts(max_n);
                std::vector<float> vs(max_n * dim);
                const std::uint64_t lo = std::max(m.cursor, m.oldest());
                const std::size_t k_model = m.take(max_n);
                const std::size_t k = r.read_new(max_n, ts.data(), vs.data());
                RB_CHECK(k == k_model, "read_new count %zu vs %zu", k, k_model);
                for (std::size_t i = 0; i < k; ++i) {
                    const Item& it = m.items[static_cast<std::size_t>(lo + i - m.oldest())];
                    RB_CHECK(ts[i] == it.t, "read_new ts");
                    for (std::size_t j = 0; j < dim; ++j) RB_CHECK(vs[i * dim + j] == it.v[j], "read_new value");
                }
                ++checks;
            } else if (kind < 98) {  // consume
                const std::size_t max_n = static_cast<std::size_t>(irand(0, static_cast<long>(cap + 2)));
                RB_CHECK(r.consume(max_n) == m.take(max_n), "consume count");
            } else {  // clear
                const auto before = r.window(0);
                r.clear();
                m.dropped += std::max(m.cursor, m.oldest()) - m.cursor;  // lost before clear
                m.items.clear();
                m.cursor = m.total;
                m.last_t = -INFINITY;
                RB_CHECK(!r.intact(before.start_seq - (before.start_seq > 0 ? 1 : 0)) || m.total == 0,
                         "window from before clear() reported intact");
                t = uni(-5, 5);  // a new timeline may start anywhere
            }
            check_state(r, m);
        }
    }
    std::printf("model_test: OK (%ld checks)\n", checks);
    return 0;
}
