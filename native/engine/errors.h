// errors.h — the engine's one error type and its check helpers.
// The engine never exits the process (it runs inside a Temporal worker next to other activities): every failed
// check throws an EngineError carrying a code (which drives retry classification in TypeScript), the source
// file:line, the values involved and a hint telling the user what to do. Modelled on llm.c llmc/utils.h, minus
// the exit(EXIT_FAILURE).
#pragma once
#include <cstdio>
#include <cstring>
#include <cerrno>
#include <stdexcept>
#include <string>

namespace engine {

// One name per failure class; the strings are the `code` values of EngineError in native/index.ts.
enum class ErrorCode { OutOfMemory, NonFiniteLoss, BadShape, IO, BadCheckpoint, BadConfig, Aborted, Device, Internal };

inline const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::OutOfMemory: return "OUT_OF_MEMORY";
    case ErrorCode::NonFiniteLoss: return "NON_FINITE_LOSS";
    case ErrorCode::BadShape: return "BAD_SHAPE";
    case ErrorCode::IO: return "IO";
    case ErrorCode::BadCheckpoint: return "BAD_CHECKPOINT";
    case ErrorCode::BadConfig: return "BAD_CONFIG";
    case ErrorCode::Aborted: return "ABORTED";
    case ErrorCode::Device: return "DEVICE";
    case ErrorCode::Internal: return "INTERNAL";
  }
  return "INTERNAL";
}

class EngineError : public std::runtime_error {
 public:
  EngineError(ErrorCode code, std::string message, const char* file, int line, std::string hint = "", long step = -1)
      : std::runtime_error(message), code(code), file(file ? file : ""), line(line), hint(std::move(hint)), step(step) {}
  ErrorCode code;
  std::string file;  // engine source file that detected the failure
  int line;
  std::string hint;  // what the user can do about it ("" when nothing useful can be said)
  long step;         // optimizer step at which it happened, -1 when not during training
};

// printf-style formatting into a std::string (messages carry the values involved).
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace engine

// Strip the directory so messages say "checkpoint.cpp:120", not a build-machine path.
#define ENGINE_FILE_ (std::strrchr(__FILE__, '/') ? std::strrchr(__FILE__, '/') + 1 : __FILE__)

// Throw a coded error: ENGINE_THROW(BadShape, "hint", "B=%zu exceeds %zu", B, maxB)
#define ENGINE_THROW(code, hint, ...) \
  throw ::engine::EngineError(::engine::ErrorCode::code, ::engine::strfmt(__VA_ARGS__), ENGINE_FILE_, __LINE__, hint)

// Check a condition; the message should name the values involved.
#define ENGINE_CHECK(cond, code, hint, ...) \
  do {                                      \
    if (!(cond)) ENGINE_THROW(code, hint, __VA_ARGS__); \
  } while (0)

// Check a POSIX/stdio call that reports failure through errno (message gets strerror appended).
#define ENGINE_CHECK_IO(cond, hint, ...)                                                                          \
  do {                                                                                                            \
    if (!(cond)) {                                                                                                \
      int e_ = errno;                                                                                             \
      throw ::engine::EngineError(::engine::ErrorCode::IO, ::engine::strfmt(__VA_ARGS__) + ": " + std::strerror(e_), \
                                  ENGINE_FILE_, __LINE__, hint);                                                  \
    }                                                                                                             \
  } while (0)
