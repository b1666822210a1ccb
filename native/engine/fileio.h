// fileio.h — the file operations checkpoints and exports are built from: whole-file reads, durable writes
// (write, fsync, rename), directory fsync and removal. Every failure throws an IO EngineError naming the path.
#pragma once
#include <cstddef>
#include <string>
#include <vector>
#include "sha256.h"

namespace engine {

std::string read_text_file(const std::string& path);
bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
size_t file_size(const std::string& path);
void make_dirs(const std::string& path);
void remove_tree(const std::string& path);   // no-op when absent
void fsync_dir(const std::string& path);
void rename_path(const std::string& from, const std::string& to);
std::string parent_dir(const std::string& path);
std::string base_name(const std::string& path);
std::string unique_suffix();                 // "<pid>-<counter>-<time>" for private temp names

// Writes through a FILE*, hashing everything written; close() fsyncs and returns the hex SHA-256.
class FileWriter {
 public:
  explicit FileWriter(const std::string& path);
  ~FileWriter();
  void write(const void* data, size_t n);
  void pad_to(size_t alignment);  // zero bytes up to the next multiple of alignment
  size_t written() const { return written_; }
  std::string close();
 private:
  std::string path_;
  FILE* f_ = nullptr;
  size_t written_ = 0;
  Sha256 sha_;
};

// Durable small file: write to path.tmp, fsync, rename over path.
void write_file_atomic(const std::string& path, const std::string& content);
void copy_file(const std::string& from, const std::string& to);  // with fsync

// Publish a finished staging directory as `dir`, atomically: `done` is written into staging as its DONE marker
// (fsynced) before one rename(2) moves staging to `dir`, so a directory under the final name is always complete.
// rename(2) of a directory never replaces a non-empty one, so of two writers publishing the same `dir` at once
// exactly one wins; the other gets false (its staging is left to the caller) and finds the winner's DONE.
// A `dir` without DONE can only be left by an older engine that crashed between its rename and its DONE: it is
// moved aside (".<name>.stale-<suffix>", then removed) and the publish is retried.
bool publish_dir(const std::string& staging, const std::string& dir, const std::string& done);
std::string sha256_file(const std::string& path);

}  // namespace engine
