// main.cpp — runs the registered engine tests (see harness.h). Usage: engine_tests [name...]
#include <cstring>
#include "errors.h"
#include "harness.h"

std::vector<TestCase>& test_registry() {
  static std::vector<TestCase> r;
  return r;
}
int g_failures = 0;

int main(int argc, char** argv) {
  int ran = 0;
  for (const auto& t : test_registry()) {
    bool selected = argc == 1;
    for (int i = 1; i < argc; i++) selected |= std::strcmp(argv[i], t.name) == 0;
    if (!selected) continue;
    int before = g_failures;
    std::printf("[ RUN  ] %s\n", t.name);
    std::fflush(stdout);
    try {
      t.fn();
    } catch (const engine::EngineError& e) {
      std::printf("  FAIL uncaught EngineError %s at %s:%d: %s\n", engine::error_code_name(e.code), e.file.c_str(), e.line, e.what());
      g_failures++;
    } catch (const std::exception& e) {
      std::printf("  FAIL uncaught exception: %s\n", e.what());
      g_failures++;
    }
    std::printf("[ %s ] %s\n", g_failures == before ? " OK " : "FAIL", t.name);
    ran++;
  }
  std::printf("%d tests, %d failed checks\n", ran, g_failures);
  return g_failures ? 1 : (ran ? 0 : 2);
}
