// harness.h — a minimal test runner for the engine's C++ tests (no framework dependency): TEST(name) registers a
// function, CHECK* record failures with file:line and keep going, main() runs the tests named on the command
// line (or all) and returns non-zero when any check failed.
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

struct TestCase { const char* name; std::function<void()> fn; };
std::vector<TestCase>& test_registry();
extern int g_failures;

struct TestRegistrar {
  TestRegistrar(const char* n, std::function<void()> f) { test_registry().push_back({n, std::move(f)}); }
};
#define TEST(name)                                             \
  static void test_##name();                                   \
  static TestRegistrar reg_##name(#name, test_##name);         \
  static void test_##name()

#define CHECK(cond)                                                                \
  do {                                                                             \
    if (!(cond)) { std::printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); g_failures++; } \
  } while (0)
#define CHECK_NEAR(a, b, tol)                                                                              \
  do {                                                                                                     \
    double a_ = (a), b_ = (b);                                                                             \
    if (!(std::fabs(a_ - b_) <= (tol))) {                                                                  \
      std::printf("  FAIL %s:%d: %s = %.9g vs %s = %.9g (tol %g)\n", __FILE__, __LINE__, #a, a_, #b, b_, (double)(tol)); \
      g_failures++;                                                                                        \
    }                                                                                                      \
  } while (0)
// Expect an EngineError with the given code.
#define CHECK_THROWS_CODE(expr, code_)                                                           \
  do {                                                                                           \
    bool thrown_ = false;                                                                        \
    try { expr; } catch (const engine::EngineError& e) {                                         \
      thrown_ = true;                                                                            \
      if (e.code != engine::ErrorCode::code_) {                                                  \
        std::printf("  FAIL %s:%d: %s threw %s: %s\n", __FILE__, __LINE__, #expr, engine::error_code_name(e.code), e.what()); \
        g_failures++;                                                                            \
      }                                                                                          \
    }                                                                                            \
    if (!thrown_) { std::printf("  FAIL %s:%d: %s did not throw\n", __FILE__, __LINE__, #expr); g_failures++; } \
  } while (0)
