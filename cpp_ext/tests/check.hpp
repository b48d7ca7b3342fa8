// Minimal assertion helper for the pure C++ ring buffer harnesses (no test framework needed).
#pragma once
#include <cstdio>
#include <cstdlib>

#define RB_CHECK(cond, ...)                                                        \
    do {                                                                           \
        if (!(cond)) {                                                             \
            std::fprintf(stderr, "CHECK FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                     \
            std::fprintf(stderr, "\n");                                            \
            std::exit(1);                                                          \
        }                                                                          \
    } while (0)

// Expects `stmt` to throw an exception of type `Exc`.
#define RB_THROWS(Exc, stmt)                                                       \
    do {                                                                           \
        bool thrown_ = false;                                                      \
        try {                                                                      \
            stmt;                                                                  \
        } catch (const Exc&) {                                                     \
            thrown_ = true;                                                        \
        }                                                                          \
        RB_CHECK(thrown_, "expected %s from %s", #Exc, #stmt);                     \
    } while (0)
