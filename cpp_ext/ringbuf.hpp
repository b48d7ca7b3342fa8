// affedge ring buffer core: a fixed-capacity single-producer / single-consumer ring of
// timestamped float32 vectors. Header-only, C++17, no Python: the pybind11 module
// (ringbuf_module.cpp) and the pure C++ test harnesses (cpp_ext/tests/*.cpp) both include it.
//
// Storage ("write twice"): item with sequence number s lives in slot p = s % C and is written
// to rows p and p + C of a 2C-row array, so the newest n <= C items are always one contiguous
// block (rows (h-n)%C .. (h-n)%C + n).  Timestamps (float64 seconds) are mirrored the same way.
//
// Concurrency (ARCHITECTURE.md §5, EDGE.md "Ring buffer practice"):
//   * exactly one producer thread calls push / push_many / clear;
//   * exactly one consumer thread calls read_new / consume (the read cursor);
//   * any thread may call the read-only queries (window, at, at_many, size, ...).
// The producer never waits: when the ring is full it overwrites the oldest item. Two atomic
// counters describe its progress:
//   head_  number of items completely written (published with release ordering);
//   wend_  number of items whose writing has begun (stored before the payload is written).
// Readers use the seqlock pattern: load head_ (acquire), read the payload, then an acquire
// fence and a load of wend_. Item s was (possibly) being overwritten during the read iff
// s < wend_ - C; such reads are discarded (at/at_many retry, read_new counts the items as
// overruns). The payload itself is accessed with relaxed atomic word loads/stores so that
// concurrent overwrites are well-defined (and ThreadSanitizer-clean) rather than data races.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>

namespace affedge {

// A timestamp was not finite or not strictly after the previous one.
struct TimestampError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// A query could not get a consistent snapshot because the producer kept overwriting the
// items it needed (the ring is far too small for the producer's rate).
struct OverrunError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Two threads used the producer (or the consumer cursor) at the same time.
struct ConcurrencyError : std::logic_error {
    using std::logic_error::logic_error;
};

enum class Mode { Previous, Nearest, Linear };

inline Mode parse_mode(const std::string& s) {
    if (s == "previous") return Mode::Previous;
    if (s == "nearest") return Mode::Nearest;
    if (s == "linear") return Mode::Linear;
    throw std::invalid_argument("unknown mode '" + s +
                                "': expected 'previous', 'nearest' or 'linear'");
}

namespace detail {

// Relaxed atomic word copies. On x86-64 and AArch64 these compile to plain loads/stores.
static_assert(sizeof(float) == sizeof(std::uint32_t), "float must be 32-bit");
static_assert(sizeof(double) == sizeof(std::uint64_t), "double must be 64-bit");

// Rows of an even number of floats (at even offsets) are copied as 64-bit words, others as
// 32-bit words. A ring uses one word size for all its payload accesses (chosen from the parity
// of dim), so the same memory is never accessed through two different word types.
inline void store_words(std::uint32_t* dst, const float* src, std::size_t n, bool wide) {
    if (wide) {
        auto* d = reinterpret_cast<std::uint64_t*>(dst);
        for (std::size_t i = 0; i < n / 2; ++i) {
            std::uint64_t w;
            std::memcpy(&w, src + 2 * i, sizeof w);
            __atomic_store_n(d + i, w, __ATOMIC_RELAXED);
        }
        return;
    }
    for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t w;
        std::memcpy(&w, src + i, sizeof w);
        __atomic_store_n(dst + i, w, __ATOMIC_RELAXED);
    }
}

inline void load_words(float* dst, const std::uint32_t* src, std::size_t n, bool wide) {
    if (wide) {
        const auto* s = reinterpret_cast<const std::uint64_t*>(src);
        for (std::size_t i = 0; i < n / 2; ++i) {
            std::uint64_t w = __atomic_load_n(s + i, __ATOMIC_RELAXED);
            std::memcpy(dst + 2 * i, &w, sizeof w);
        }
        return;
    }
    for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t w = __atomic_load_n(src + i, __ATOMIC_RELAXED);
        std::memcpy(dst + i, &w, sizeof w);
    }
}

inline void store_d(std::uint64_t* p, double d) {
    std::uint64_t w;
    std::memcpy(&w, &d, sizeof w);
    __atomic_store_n(p, w, __ATOMIC_RELAXED);
}

inline double load_d(const std::uint64_t* p) {
    std::uint64_t w = __atomic_load_n(p, __ATOMIC_RELAXED);
    double d;
    std::memcpy(&d, &w, sizeof d);
    return d;
}

// 64-byte aligned, zero-initialised buffer of T.
template <class T>
class AlignedArray {
public:
    explicit AlignedArray(std::size_t n) : n_(n) {
        std::size_t bytes = std::max<std::size_t>(64, ((n * sizeof(T) + 63) / 64) * 64);
        p_ = static_cast<T*>(std::aligned_alloc(64, bytes));
        if (!p_) throw std::bad_alloc();
        std::memset(p_, 0, bytes);
    }
    ~AlignedArray() { std::free(p_); }
    AlignedArray(const AlignedArray&) = delete;
    AlignedArray& operator=(const AlignedArray&) = delete;
    T* data() { return p_; }
    const T* data() const { return p_; }

private:
    T* p_ = nullptr;
    std::size_t n_;
};

// RAII guard that turns concurrent use of a single-threaded role into an exception.
class RoleGuard {
public:
    RoleGuard(std::atomic<bool>& flag, const char* role) : flag_(flag) {
        if (flag_.exchange(true, std::memory_order_acquire))
            throw ConcurrencyError(std::string("RingBuffer: two threads used the ") + role +
                                   " at the same time (single-producer/single-consumer ring)");
    }
    ~RoleGuard() { flag_.store(false, std::memory_order_release); }

private:
    std::atomic<bool>& flag_;
};

inline std::string fmt_double(double x) {
    std::ostringstream os;
    os.precision(17);
    os << x;
    return os.str();
}

}  // namespace detail

class RingBuffer {
public:
    // Pointers into the mirrored storage describing the newest n items (see window()).
    struct Window {
        std::uint64_t start_seq;  // sequence number of the first (oldest) item
        std::size_t n;
        const double* ts;     // n timestamps, contiguous
        const float* values;  // n * dim floats, row-major, contiguous
    };

    RingBuffer(std::size_t dim, std::size_t capacity, bool reject_nonfinite = false)
        : dim_(check_positive(dim, "dim")),
          cap_(check_positive(capacity, "capacity")),
          reject_nonfinite_(reject_nonfinite),
          data_(checked_rows(dim, capacity)),
          ts_(2 * capacity),
          wide_(dim % 2 == 0) {}

    RingBuffer(const RingBuffer&) = delete;
    RingBuffer& operator=(const RingBuffer&) = delete;

    std::size_t dim() const { return dim_; }
    std::size_t capacity() const { return cap_; }
    bool reject_nonfinite() const { return reject_nonfinite_; }

    // ---------------------------------------------------------------- producer side

    // Appends one item. t must be finite and strictly greater than the previous timestamp;
    // with reject_nonfinite every value must be finite. Nothing is written on error.
    void push(double t, const float* values) {
        detail::RoleGuard g(producer_busy_, "producer");
        check_time(t, last_t_, 0);
        if (reject_nonfinite_) check_finite(values, 1);
        const std::uint64_t h = head_.load(std::memory_order_relaxed);
        begin_write(h + 1);
        write_item(h, t, values);
        last_t_ = t;
        head_.store(h + 1, std::memory_order_release);
    }

    // Appends n items (ts[n], values[n * dim] row-major). All checks run before anything is
    // written, so a failing call leaves the ring unchanged. When n > capacity only the last
    // capacity items are stored (the others count as pushed and, if unread, as overruns).
    void push_many(std::size_t n, const double* ts, const float* values) {
        detail::RoleGuard g(producer_busy_, "producer");
        if (n == 0) return;
        double prev = last_t_;
        for (std::size_t i = 0; i < n; ++i) {
            check_time(ts[i], prev, i);
            prev = ts[i];
        }
        if (reject_nonfinite_) check_finite(values, n);
        const std::uint64_t h = head_.load(std::memory_order_relaxed);
        const std::size_t skip = n > cap_ ? n - cap_ : 0;
        begin_write(h + n);
        for (std::size_t i = skip; i < n; ++i) write_item(h + i, ts[i], values + i * dim_);
        last_t_ = ts[n - 1];
        head_.store(h + n, std::memory_order_release);
    }

    // Forgets the stored items and the last timestamp, so the next push may start a new
    // timeline. Stored unread items are discarded on purpose (not overruns); items already
    // lost before clear() stay counted. total_pushed and overruns keep counting
    // (sequence numbers stay unique, so windows taken before clear() report !intact()).
    // Not thread-safe: call it only when no other thread is using the ring.
    void clear() {
        detail::RoleGuard g(producer_busy_, "producer");
        const std::uint64_t h = head_.load(std::memory_order_relaxed);
        const std::uint64_t c = cursor_.load(std::memory_order_relaxed);
        const std::uint64_t o = oldest(h);
        if (o > c) dropped_.fetch_add(o - c, std::memory_order_relaxed);  // already lost: keep
        first_.store(h, std::memory_order_relaxed);
        cursor_.store(h, std::memory_order_relaxed);
        last_t_ = -std::numeric_limits<double>::infinity();
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }

    // ---------------------------------------------------------------- queries (any thread)

    // Total number of items ever pushed (= sequence number of the next item).
    std::uint64_t total_pushed() const { return head_.load(std::memory_order_acquire); }

    // Number of items currently stored (<= capacity).
    std::size_t size() const {
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        return static_cast<std::size_t>(h - oldest(h));
    }

    // Timestamp of the newest item; NaN when empty.
    double latest_time() const {
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        if (h == oldest(h)) return std::numeric_limits<double>::quiet_NaN();
        return detail::load_d(ts_.data() + slot(h - 1));
    }

    // Timestamp of the oldest stored item; NaN when empty. (Racy by nature when the ring is
    // full and a producer is pushing: the value may already be gone.)
    double oldest_time() const {
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        const std::uint64_t o = oldest(h);
        if (h == o) return std::numeric_limits<double>::quiet_NaN();
        return detail::load_d(ts_.data() + slot(o));
    }

    // The newest n items as one contiguous block (no copy). Validity contract: the block is
    // overwritten starting with push number capacity - n + 1 after this call, i.e. it stays
    // valid for capacity - n further pushes. With a concurrently running producer, read the
    // data and then call intact(start_seq): true means nothing you read was being overwritten.
    Window window(std::size_t n) const {
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        const std::size_t stored = static_cast<std::size_t>(h - oldest(h));
        if (n > cap_)
            throw std::invalid_argument("window of " + std::to_string(n) +
                                        " items exceeds the capacity " + std::to_string(cap_));
        if (n > stored)
            throw std::invalid_argument("window of " + std::to_string(n) + " items but only " +
                                        std::to_string(stored) + " are stored");
        const std::uint64_t start = h - n;
        const std::size_t p = slot(start);
        return Window{start, n, reinterpret_cast<const double*>(ts_.data() + p),
                      reinterpret_cast<const float*>(data_.data() + p * dim_)};
    }

    // True iff the items from sequence number start_seq on are still stored and none of
    // them has been (or is being) overwritten. Conservative: also false while the push
    // that would overwrite item start_seq may be in progress.
    bool intact(std::uint64_t start_seq) const {
        std::atomic_thread_fence(std::memory_order_acquire);
        const std::uint64_t w = wend_.load(std::memory_order_relaxed);
        return start_seq >= first_.load(std::memory_order_relaxed) && start_seq + cap_ >= w;
    }

    // Value at time t (see Mode) over the stored items, written to out[dim]. Matches
    // affedge.features.align.sample_at(stored_ts, stored_values, [t], mode):
    //   previous: last item with time <= t (the first item if t precedes all);
    //   nearest:  closest time, ties to the earlier item;
    //   linear:   linear interpolation between neighbours, clamped to the end items.
    void at(double t, Mode mode, float* out) const { at_many(&t, 1, mode, out); }

    // at() for q query times (any order), out[q * dim]. One consistent snapshot per query.
    void at_many(const double* times, std::size_t q, Mode mode, float* out) const {
        for (std::size_t k = 0; k < q; ++k)
            if (!std::isfinite(times[k]))
                throw std::invalid_argument("query time " + detail::fmt_double(times[k]) +
                                            " at index " + std::to_string(k) +
                                            " is not finite");
        for (std::size_t k = 0; k < q; ++k) query_one(times[k], mode, out + k * dim_);
    }

    // ---------------------------------------------------------------- consumer cursor

    // Copies up to max_n items not yet read (oldest first) to ts_out / values_out and
    // advances the read cursor past them. Items overwritten before they could be read are
    // skipped and counted in overruns(). Returns the number of items copied.
    std::size_t read_new(std::size_t max_n, double* ts_out, float* values_out) {
        detail::RoleGuard g(consumer_busy_, "consumer");
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        const std::uint64_t c = cursor_.load(std::memory_order_relaxed);
        std::uint64_t lo = std::max(c, oldest(h));
        std::uint64_t lost = lo - c;
        std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(h - lo, max_n));
        for (std::size_t i = 0; i < k; ++i) {
            const std::size_t p = slot(lo + i);
            ts_out[i] = detail::load_d(ts_.data() + p);
            detail::load_words(values_out + i * dim_, data_.data() + p * dim_, dim_, wide_);
        }
        // Seqlock validation: drop the (oldest) items the producer may have torn.
        std::atomic_thread_fence(std::memory_order_acquire);
        const std::uint64_t w = wend_.load(std::memory_order_relaxed);
        const std::uint64_t safe_from = w > cap_ ? w - cap_ : 0;
        if (lo < safe_from) {
            const std::size_t d = static_cast<std::size_t>(std::min<std::uint64_t>(safe_from - lo, k));
            if (d > 0 && d < k) {
                std::memmove(ts_out, ts_out + d, (k - d) * sizeof(double));
                std::memmove(values_out, values_out + d * dim_, (k - d) * dim_ * sizeof(float));
            }
            lost += d;
            lo += d;
            k -= d;
        }
        advance_cursor(lo + k, lost);
        return k;
    }

    // Marks up to max_n unread items as read without copying them; returns how many.
    // Items already overwritten are skipped and counted in overruns().
    std::size_t consume(std::size_t max_n) {
        detail::RoleGuard g(consumer_busy_, "consumer");
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        const std::uint64_t c = cursor_.load(std::memory_order_relaxed);
        const std::uint64_t lo = std::max(c, oldest(h));
        const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(h - lo, max_n));
        advance_cursor(lo + k, lo - c);
        return k;
    }

    // Sequence number of the next item read_new() would return (if still stored).
    std::uint64_t read_cursor() const { return cursor_.load(std::memory_order_acquire); }

    // Number of stored items not yet read.
    std::size_t unread() const {
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        const std::uint64_t c = cursor_.load(std::memory_order_acquire);
        return static_cast<std::size_t>(h - std::max(c, oldest(h)));
    }

    // Items that were overwritten before the consumer read (or consumed) them: those
    // already skipped by read_new/consume plus those lost now but not yet skipped. Exact
    // from the consumer thread or when quiet; from another thread it may lag momentarily.
    std::uint64_t overruns() const {
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        const std::uint64_t c = cursor_.load(std::memory_order_acquire);
        const std::uint64_t d = dropped_.load(std::memory_order_acquire);
        const std::uint64_t lost_now = h > cap_ && h - cap_ > c ? h - cap_ - c : 0;
        return d + lost_now;
    }

private:
    static std::size_t check_positive(std::size_t v, const char* name) {
        if (v == 0) throw std::invalid_argument(std::string(name) + " must be >= 1");
        return v;
    }

    static std::size_t checked_rows(std::size_t dim, std::size_t cap) {
        const std::size_t limit = std::numeric_limits<std::size_t>::max() / 8;
        if (dim == 0 || cap == 0) return 1;  // reported by check_positive
        if (cap > limit / 2 || dim > limit / (2 * cap))
            throw std::invalid_argument("dim * capacity is too large");
        return 2 * cap * dim;
    }

    std::size_t slot(std::uint64_t seq) const { return static_cast<std::size_t>(seq % cap_); }

    // Sequence number of the oldest stored item given head h.
    std::uint64_t oldest(std::uint64_t h) const {
        const std::uint64_t f = first_.load(std::memory_order_relaxed);
        const std::uint64_t o = h > cap_ ? h - cap_ : 0;
        return std::max(f, o);
    }

    static void check_time(double t, double prev, std::size_t i) {
        if (!std::isfinite(t))
            throw TimestampError("timestamp " + detail::fmt_double(t) + " (item " +
                                 std::to_string(i) + ") is not finite");
        if (!(t > prev))
            throw TimestampError("timestamp " + detail::fmt_double(t) + " (item " +
                                 std::to_string(i) + ") is not after the previous one " +
                                 detail::fmt_double(prev) +
                                 ": timestamps must be strictly increasing");
    }

    void check_finite(const float* v, std::size_t n) const {
        const std::size_t total = n * dim_;
        for (std::size_t i = 0; i < total; ++i)
            if (!std::isfinite(v[i]))
                throw std::invalid_argument(
                    "non-finite value " + detail::fmt_double(v[i]) + " at item " +
                    std::to_string(i / dim_) + ", column " + std::to_string(i % dim_) +
                    " (the ring was created with reject_nonfinite=True)");
    }

    // Announce that items < new_wend are being written; the release fence orders this
    // store before the payload stores that follow (seqlock writer side).
    void begin_write(std::uint64_t new_wend) {
        wend_.store(new_wend, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
    }

    void write_item(std::uint64_t seq, double t, const float* v) {
        const std::size_t p = slot(seq);
        std::uint32_t* row = data_.data() + p * dim_;
        detail::store_words(row, v, dim_, wide_);
        detail::store_words(row + cap_ * dim_, v, dim_, wide_);
        detail::store_d(ts_.data() + p, t);
        detail::store_d(ts_.data() + p + cap_, t);
    }

    void advance_cursor(std::uint64_t new_cursor, std::uint64_t lost) {
        // dropped_ first, then the cursor: a concurrent overruns() may briefly count the
        // lost items twice, never miss them.
        if (lost) dropped_.fetch_add(lost, std::memory_order_release);
        cursor_.store(new_cursor, std::memory_order_release);
    }

    void query_one(double t, Mode mode, float* out) const {
        for (int attempt = 0; attempt < 64; ++attempt) {
            const std::uint64_t h = head_.load(std::memory_order_acquire);
            const std::uint64_t o = oldest(h);
            const std::size_t n = static_cast<std::size_t>(h - o);
            if (n == 0) throw std::invalid_argument("query on an empty ring");
            const std::size_t base = slot(o);
            const std::uint64_t* ts = ts_.data() + base;
            const std::uint32_t* vals = data_.data() + base * dim_;
            // i = index of the last item with time <= t, or n when t precedes all items.
            // Binary search over [lo, hi); track the lowest index touched for validation.
            std::size_t lo = 0, hi = n, touched = n;
            while (lo < hi) {
                const std::size_t mid = lo + (hi - lo) / 2;
                touched = std::min(touched, mid);
                if (detail::load_d(ts + mid) <= t)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            // lo = number of items with time <= t.
            std::size_t i0, i1;
            double w = 0.0;
            if (lo == 0) {
                i0 = i1 = 0;
            } else if (lo == n) {
                i0 = i1 = n - 1;
            } else {
                const std::size_t i = lo - 1;
                const double ta = detail::load_d(ts + i), tb = detail::load_d(ts + i + 1);
                if (mode == Mode::Previous) {
                    i0 = i1 = i;
                } else if (mode == Mode::Nearest) {
                    i0 = i1 = (tb - t < t - ta) ? i + 1 : i;
                } else {
                    i0 = i;
                    i1 = i + 1;
                    w = (t - ta) / (tb - ta);
                }
            }
            touched = std::min(touched, lo == 0 ? std::size_t{0} : std::min(i0, lo - 1));
            detail::load_words(out, vals + i0 * dim_, dim_, wide_);
            if (i1 != i0) {
                // Interpolate in chunks of the second row (64 floats: an even chunk size keeps
                // the 64-bit word alignment).
                float vb[64];
                for (std::size_t j0 = 0; j0 < dim_; j0 += 64) {
                    const std::size_t m = std::min<std::size_t>(64, dim_ - j0);
                    detail::load_words(vb, vals + i1 * dim_ + j0, m, wide_);
                    for (std::size_t j = 0; j < m; ++j) {
                        // Same float64 expression as align.sample_at, so results agree exactly.
                        const double va = out[j0 + j];
                        out[j0 + j] = static_cast<float>((1.0 - w) * va + w * double(vb[j]));
                    }
                }
            }
            std::atomic_thread_fence(std::memory_order_acquire);
            const std::uint64_t wend = wend_.load(std::memory_order_relaxed);
            if (o + touched + cap_ >= wend) return;  // nothing we read was being overwritten
        }
        throw OverrunError(
            "RingBuffer query: the producer kept overwriting the items needed (64 attempts); "
            "the ring capacity is too small for the push rate");
    }

    const std::size_t dim_;
    const std::size_t cap_;
    const bool reject_nonfinite_;
    detail::AlignedArray<std::uint32_t> data_;  // 2 * cap * dim float32 words
    detail::AlignedArray<std::uint64_t> ts_;    // 2 * cap float64 words
    const bool wide_;                           // even dim: payload moved as 64-bit words

    // Producer-owned.
    alignas(64) std::atomic<std::uint64_t> head_{0};
    std::atomic<std::uint64_t> wend_{0};
    double last_t_ = -std::numeric_limits<double>::infinity();
    std::atomic<bool> producer_busy_{false};
    std::atomic<std::uint64_t> first_{0};  // items before this were clear()ed
    // Consumer-owned.
    alignas(64) std::atomic<std::uint64_t> cursor_{0};
    std::atomic<std::uint64_t> dropped_{0};
    std::atomic<bool> consumer_busy_{false};
};

}  // namespace affedge
