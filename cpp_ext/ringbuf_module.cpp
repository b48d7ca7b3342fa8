// pybind11 bindings for the ring buffer core (ringbuf.hpp) -> Python module affedge._ringbuf.
//
// Input policy: vectors must be numpy arrays of dtype float32 (TypeError naming the dtype
// otherwise; no silent conversion). A non-C-contiguous float32 array is accepted and made
// contiguous first (one extra temporary copy). Timestamps may be any real array-like; they
// are converted to float64. Copies into the ring run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "ringbuf.hpp"

namespace py = pybind11;
using affedge::Mode;
using affedge::RingBuffer;

namespace {

using F32C = py::array_t<float, py::array::c_style>;
using F64C = py::array_t<double, py::array::c_style | py::array::forcecast>;

std::string type_name(py::handle obj) {
    return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) s += ", ";
        s += std::to_string(a.shape(i));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

// A float32 C-contiguous view of obj (no copy when it already is one).
F32C as_f32(py::handle obj, const char* what) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(what) + " must be a numpy.ndarray of float32, got " +
                             type_name(obj));
    auto a = py::reinterpret_borrow<py::array>(obj);
    const auto& api = py::detail::npy_api::get();
    if (!api.PyArray_EquivTypes_(a.dtype().ptr(), py::dtype::of<float>().ptr()))
        throw py::type_error(std::string(what) + " must have dtype float32, got " +
                             py::str(a.dtype()).cast<std::string>() +
                             " (convert with .astype(np.float32))");
    if (F32C::check_(a)) return py::reinterpret_borrow<F32C>(a);
    return F32C::ensure(a);  // non-contiguous: one documented extra copy
}

F64C as_f64(py::handle obj, const char* what) {
    auto a = F64C::ensure(obj);
    if (!a) {
        PyErr_Clear();
        throw py::type_error(std::string(what) + " must be a real-valued array, got " +
                             type_name(obj));
    }
    return a;
}

std::size_t to_count(long long n, const char* what) {
    if (n < 0) throw py::value_error(std::string(what) + " must be >= 0, got " + std::to_string(n));
    return static_cast<std::size_t>(n);
}

void make_readonly(py::array& a) {
    py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
}

py::object time_or_none(double t) {
    if (std::isnan(t)) return py::none();
    return py::float_(t);
}

F64C query_times(py::handle times) {
    F64C q = as_f64(times, "times");
    if (q.ndim() != 1)
        throw py::value_error("times must be 1-D, got shape " + shape_str(q));
    return q;
}

std::size_t limit_arg(const std::optional<long long>& max_items) {
    if (!max_items) return static_cast<std::size_t>(-1);
    return to_count(*max_items, "max_items");
}

const char* kModuleDoc = R"doc(
Fixed-capacity single-producer/single-consumer ring of timestamped float32 vectors (C++).

Threading: one producer thread (push, push_many, clear), one consumer thread (read_new,
consume); window/at/at_many/aligned and the properties may be called from any thread. Pushes
copy with the GIL released and never block; when the ring is full the oldest item is
overwritten. Items overwritten before the consumer read them are counted in ``overruns``.

Window validity: ``window(n)`` returns read-only numpy views into the ring (no copy). With
capacity C they keep showing the same items for C - n further pushes; after that the oldest
rows are overwritten in place. With a producer running concurrently, call
``window(n, return_seq=True)``, use the data, then check ``ring.intact(start_seq)``: True means
nothing you read was overwritten while you read it. The views keep the ring alive.

Timestamps are float64 seconds, finite and strictly increasing (TimestampError otherwise).
)doc";

}  // namespace

PYBIND11_MODULE(_ringbuf, m) {
    m.doc() = kModuleDoc;

    auto ts_err = py::register_exception<affedge::TimestampError>(m, "TimestampError",
                                                                  PyExc_ValueError);
    ts_err.doc() = "A timestamp was not finite or not strictly after the previous one.";
    auto ov_err = py::register_exception<affedge::OverrunError>(m, "OverrunError",
                                                                PyExc_RuntimeError);
    ov_err.doc() = "A query kept racing with the producer overwriting the items it needed.";
    auto cc_err = py::register_exception<affedge::ConcurrencyError>(m, "ConcurrencyError",
                                                                    PyExc_RuntimeError);
    cc_err.doc() = "Two threads used the producer (or the consumer cursor) at the same time.";

    py::class_<RingBuffer> cls(m, "RingBuffer", R"doc(
RingBuffer(dim, capacity, reject_nonfinite=False)

Ring of up to ``capacity`` float32 vectors of length ``dim`` with float64 timestamps.
With ``reject_nonfinite=True`` pushes containing NaN/inf raise ValueError.
)doc");

    cls.def(py::init([](long long dim, long long capacity, bool reject_nonfinite) {
                if (dim < 1) throw py::value_error("dim must be >= 1, got " + std::to_string(dim));
                if (capacity < 1)
                    throw py::value_error("capacity must be >= 1, got " +
                                          std::to_string(capacity));
                return new RingBuffer(static_cast<std::size_t>(dim),
                                      static_cast<std::size_t>(capacity), reject_nonfinite);
            }),
            py::arg("dim"), py::arg("capacity"), py::arg("reject_nonfinite") = false);

    cls.def(
        "push",
        [](RingBuffer& r, double t, py::handle values) {
            F32C v = as_f32(values, "values");
            if (v.ndim() != 1 || static_cast<std::size_t>(v.shape(0)) != r.dim())
                throw py::value_error("values must have shape (" + std::to_string(r.dim()) +
                                      ",), got " + shape_str(v));
            const float* p = v.data();
            py::gil_scoped_release nogil;
            r.push(t, p);
        },
        py::arg("t"), py::arg("values"),
        "push(t, values): append one float32[dim] vector with timestamp t (seconds, strictly\n"
        "increasing). One copy into the ring, GIL released.");

    cls.def(
        "push_many",
        [](RingBuffer& r, py::handle ts, py::handle values) {
            F32C v = as_f32(values, "values");
            F64C t = as_f64(ts, "ts");
            if (v.ndim() != 2 || static_cast<std::size_t>(v.shape(1)) != r.dim())
                throw py::value_error("values must have shape (n, " + std::to_string(r.dim()) +
                                      "), got " + shape_str(v));
            if (t.ndim() != 1 || t.shape(0) != v.shape(0))
                throw py::value_error("ts must have shape (" + std::to_string(v.shape(0)) +
                                      ",) to match values, got " + shape_str(t));
            const std::size_t n = static_cast<std::size_t>(v.shape(0));
            const double* tp = t.data();
            const float* vp = v.data();
            py::gil_scoped_release nogil;
            r.push_many(n, tp, vp);
        },
        py::arg("ts"), py::arg("values"),
        "push_many(ts, values): append float32[n, dim] rows with timestamps ts[n]. All-or-\n"
        "nothing: on any error nothing is written.");

    cls.def(
        "window",
        [](py::handle self, long long n, bool return_seq) -> py::object {
            RingBuffer& r = self.cast<RingBuffer&>();
            const auto w = r.window(to_count(n, "n"));
            const auto nn = static_cast<py::ssize_t>(w.n);
            const auto d = static_cast<py::ssize_t>(r.dim());
            py::array ts(py::dtype::of<double>(), {nn}, {static_cast<py::ssize_t>(sizeof(double))},
                         w.ts, self);
            py::array vals(py::dtype::of<float>(), {nn, d},
                           {static_cast<py::ssize_t>(d * sizeof(float)),
                            static_cast<py::ssize_t>(sizeof(float))},
                           w.values, self);
            make_readonly(ts);
            make_readonly(vals);
            if (return_seq) return py::make_tuple(ts, vals, w.start_seq);
            return py::make_tuple(ts, vals);
        },
        py::arg("n"), py::arg("return_seq") = false,
        "window(n, return_seq=False) -> (ts float64[n], values float32[n, dim])\n"
        "[, start_seq]: the newest n items as read-only views into the ring (no copy), oldest\n"
        "first. Valid for capacity - n further pushes; check intact(start_seq) after use when\n"
        "a producer runs concurrently. ValueError if n > capacity or n > size.");

    cls.def("intact", &RingBuffer::intact, py::arg("start_seq"),
            "intact(start_seq) -> bool: True iff the items from sequence number start_seq on\n"
            "are still stored and none was (or is being) overwritten.");

    cls.def(
        "at",
        [](const RingBuffer& r, double t, const std::string& mode) {
            const Mode md = affedge::parse_mode(mode);
            py::array_t<float> out(static_cast<py::ssize_t>(r.dim()));
            r.at(t, md, out.mutable_data());
            return out;
        },
        py::arg("t"), py::arg("mode") = "previous",
        "at(t, mode='previous') -> float32[dim]: value at time t over the stored items.\n"
        "previous: last item with time <= t (first item if t precedes all); nearest: closest\n"
        "time, ties to the earlier; linear: interpolation, clamped at both ends. Same\n"
        "semantics as affedge.features.align.sample_at. ValueError on an empty ring.");

    cls.def(
        "at_many",
        [](const RingBuffer& r, py::handle times, const std::string& mode) {
            const Mode md = affedge::parse_mode(mode);
            F64C q = query_times(times);
            const auto nq = static_cast<std::size_t>(q.shape(0));
            py::array_t<float> out({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(r.dim())});
            const double* qp = q.data();
            float* op = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                r.at_many(qp, nq, md, op);
            }
            return out;
        },
        py::arg("times"), py::arg("mode") = "previous",
        "at_many(times, mode='previous') -> float32[len(times), dim]: at() for each time.");

    cls.def(
        "read_new",
        [](RingBuffer& r, std::optional<long long> max_items) -> py::tuple {
            const std::size_t lim = limit_arg(max_items);
            const std::size_t k = std::min(lim, r.unread());
            const auto d = static_cast<py::ssize_t>(r.dim());
            py::array_t<double> ts(static_cast<py::ssize_t>(k));
            py::array_t<float> vals({static_cast<py::ssize_t>(k), d});
            double* tp = ts.mutable_data();
            float* vp = vals.mutable_data();
            std::size_t got;
            {
                py::gil_scoped_release nogil;
                got = r.read_new(k, tp, vp);
            }
            if (got < k) {  // the producer overwrote some of them while we copied
                py::slice s(0, static_cast<py::ssize_t>(got), 1);
                return py::make_tuple(ts[s], vals[s]);
            }
            return py::make_tuple(ts, vals);
        },
        py::arg("max_items") = py::none(),
        "read_new(max_items=None) -> (ts float64[k], values float32[k, dim]): copies of the\n"
        "items not yet read, oldest first (at most max_items), advancing the read cursor.\n"
        "Items overwritten before being read are skipped and counted in overruns.");

    cls.def(
        "consume",
        [](RingBuffer& r, std::optional<long long> max_items) {
            return r.consume(limit_arg(max_items));
        },
        py::arg("max_items") = py::none(),
        "consume(max_items=None) -> int: mark unread items as read without copying them\n"
        "(e.g. after using window()); returns how many. Lost items count as overruns.");

    cls.def("clear", &RingBuffer::clear,
            "clear(): drop stored and unread items and forget the last timestamp (a new\n"
            "timeline may start). total_pushed and overruns keep counting. Call only when no\n"
            "other thread uses the ring.");

    cls.def_property_readonly("dim", &RingBuffer::dim);
    cls.def_property_readonly("capacity", &RingBuffer::capacity);
    cls.def_property_readonly("reject_nonfinite", &RingBuffer::reject_nonfinite);
    cls.def_property_readonly("size", &RingBuffer::size, "number of items stored now");
    cls.def("__len__", &RingBuffer::size);
    cls.def_property_readonly("total_pushed", &RingBuffer::total_pushed,
                              "items ever pushed = sequence number of the next item");
    cls.def_property_readonly("overruns", &RingBuffer::overruns,
                              "items overwritten before the consumer read or consumed them");
    cls.def_property_readonly("unread", &RingBuffer::unread,
                              "stored items not yet read by read_new/consume");
    cls.def_property_readonly("read_cursor", &RingBuffer::read_cursor,
                              "sequence number of the next item read_new would return");
    cls.def_property_readonly(
        "latest_time", [](const RingBuffer& r) { return time_or_none(r.latest_time()); },
        "timestamp of the newest item, None when empty");
    cls.def_property_readonly(
        "oldest_time", [](const RingBuffer& r) { return time_or_none(r.oldest_time()); },
        "timestamp of the oldest stored item, None when empty");
    cls.def("__repr__", [](const RingBuffer& r) {
        return "RingBuffer(dim=" + std::to_string(r.dim()) +
               ", capacity=" + std::to_string(r.capacity()) +
               ", size=" + std::to_string(r.size()) +
               ", total_pushed=" + std::to_string(r.total_pushed()) +
               ", overruns=" + std::to_string(r.overruns()) + ")";
    });

    m.def(
        "aligned",
        [](py::handle rings, py::handle times, const std::string& mode) {
            const Mode md = affedge::parse_mode(mode);
            std::vector<const RingBuffer*> rs;
            for (py::handle h : py::iter(rings)) {
                if (!py::isinstance<RingBuffer>(h))
                    throw py::type_error("rings must contain RingBuffer objects, got " +
                                         type_name(h));
                rs.push_back(&h.cast<const RingBuffer&>());
            }
            if (rs.empty()) throw py::value_error("rings is empty");
            F64C q = query_times(times);
            const auto nq = static_cast<std::size_t>(q.shape(0));
            std::vector<py::array_t<float>> outs;
            std::vector<float*> ptrs;
            for (const RingBuffer* r : rs) {
                outs.emplace_back(std::vector<py::ssize_t>{static_cast<py::ssize_t>(nq),
                                                           static_cast<py::ssize_t>(r->dim())});
                ptrs.push_back(outs.back().mutable_data());
            }
            const double* qp = q.data();
            {
                py::gil_scoped_release nogil;
                for (std::size_t i = 0; i < rs.size(); ++i) rs[i]->at_many(qp, nq, md, ptrs[i]);
            }
            py::list result;
            for (auto& o : outs) result.append(o);
            return result;
        },
        py::arg("rings"), py::arg("times"), py::arg("mode") = "previous",
        "aligned(rings, times, mode='previous') -> list of float32[len(times), ring.dim]:\n"
        "each ring's value at each time (e.g. 100 Hz audio features on video frame times).");
}
