// fileio.cpp — POSIX file helpers (see fileio.h).
#include "fileio.h"
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include "errors.h"

namespace engine {

std::string read_text_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  ENGINE_CHECK_IO(f != nullptr, "check that the file exists and is readable", "cannot open %s", path.c_str());
  std::string s;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  bool err = std::ferror(f);
  std::fclose(f);
  ENGINE_CHECK_IO(!err, "", "cannot read %s", path.c_str());
  return s;
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

size_t file_size(const std::string& path) {
  struct stat st;
  ENGINE_CHECK_IO(::stat(path.c_str(), &st) == 0, "", "cannot stat %s", path.c_str());
  return (size_t)st.st_size;
}

void make_dirs(const std::string& path) {
  if (path.empty() || is_directory(path)) return;
  make_dirs(parent_dir(path));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    ENGINE_CHECK_IO(false, "check permissions and free space", "cannot create directory %s", path.c_str());
}

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    DIR* d = ::opendir(path.c_str());
    ENGINE_CHECK_IO(d != nullptr, "", "cannot open directory %s", path.c_str());
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      remove_tree(path + "/" + n);
    }
    ::closedir(d);
    ENGINE_CHECK_IO(::rmdir(path.c_str()) == 0, "", "cannot remove directory %s", path.c_str());
  } else {
    ENGINE_CHECK_IO(::unlink(path.c_str()) == 0, "", "cannot remove %s", path.c_str());
  }
}

void fsync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY);
  ENGINE_CHECK_IO(fd >= 0, "", "cannot open directory %s", path.c_str());
  int rc = ::fsync(fd);
  ::close(fd);
  ENGINE_CHECK_IO(rc == 0, "", "fsync of directory %s failed", path.c_str());
}

void rename_path(const std::string& from, const std::string& to) {
  ENGINE_CHECK_IO(::rename(from.c_str(), to.c_str()) == 0, "", "cannot rename %s to %s", from.c_str(), to.c_str());
}

std::string parent_dir(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t k = p.rfind('/');
  if (k == std::string::npos) return ".";
  if (k == 0) return "/";
  return p.substr(0, k);
}

std::string base_name(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t k = p.rfind('/');
  return k == std::string::npos ? p : p.substr(k + 1);
}

std::string unique_suffix() {
  static std::atomic<unsigned> counter{0};
  auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  return strfmt("%d-%u-%llx", (int)::getpid(), counter++, (unsigned long long)now);
}

FileWriter::FileWriter(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "wb");
  ENGINE_CHECK_IO(f_ != nullptr, "check permissions and free space", "cannot create %s", path.c_str());
  sha256_init(sha_);
}

FileWriter::~FileWriter() {
  if (f_) std::fclose(f_);
}

void FileWriter::write(const void* data, size_t n) {
  if (n == 0) return;
  ENGINE_CHECK_IO(std::fwrite(data, 1, n, f_) == n, "check free disk space", "write to %s failed after %zu bytes",
                  path_.c_str(), written_);
  sha256_update(sha_, data, n);
  written_ += n;
}

void FileWriter::pad_to(size_t alignment) {
  static const char zeros[256] = {0};
  size_t pad = (alignment - written_ % alignment) % alignment;
  while (pad) {
    size_t k = std::min(pad, sizeof zeros);
    write(zeros, k);
    pad -= k;
  }
}

std::string FileWriter::close() {
  ENGINE_CHECK_IO(std::fflush(f_) == 0, "check free disk space", "flush of %s failed", path_.c_str());
  ENGINE_CHECK_IO(::fsync(fileno(f_)) == 0, "", "fsync of %s failed", path_.c_str());
  int rc = std::fclose(f_);
  f_ = nullptr;
  ENGINE_CHECK_IO(rc == 0, "", "close of %s failed", path_.c_str());
  return sha256_hex(sha_);
}

void write_file_atomic(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp-" + unique_suffix();
  try {
    FileWriter w(tmp);
    w.write(content.data(), content.size());
    w.close();
    rename_path(tmp, path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(parent_dir(path));
}

bool publish_dir(const std::string& staging, const std::string& dir, const std::string& done) {
  write_file_atomic(staging + "/DONE", done);  // fsyncs staging as well
  const std::string parent = parent_dir(dir);
  for (int tries = 0;; tries++) {
    if (::rename(staging.c_str(), dir.c_str()) == 0) {
      fsync_dir(parent);
      return true;
    }
    const int err = errno;
    ENGINE_CHECK_IO(err == ENOTEMPTY || err == EEXIST, "", "cannot rename %s to %s", staging.c_str(), dir.c_str());
    if (path_exists(dir + "/DONE")) return false;  // another writer published first
    ENGINE_CHECK(tries < 3, IO, "", "cannot publish %s: %s keeps reappearing without a DONE marker", staging.c_str(),
                    dir.c_str());
    // a stale, never-committed directory: move it out of the way (rename, so a concurrent mover cannot race us)
    const std::string stale = parent + "/." + base_name(dir) + ".stale-" + unique_suffix();
    if (::rename(dir.c_str(), stale.c_str()) == 0) remove_tree(stale);
  }
}

void copy_file(const std::string& from, const std::string& to) {
  FILE* f = std::fopen(from.c_str(), "rb");
  ENGINE_CHECK_IO(f != nullptr, "check the path", "cannot open %s", from.c_str());
  try {
    FileWriter w(to);
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) w.write(buf, n);
    ENGINE_CHECK_IO(!std::ferror(f), "", "cannot read %s", from.c_str());
    w.close();
  } catch (...) {
    std::fclose(f);
    throw;
  }
  std::fclose(f);
}

std::string sha256_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  ENGINE_CHECK_IO(f != nullptr, "", "cannot open %s", path.c_str());
  Sha256 s;
  sha256_init(s);
  static thread_local std::vector<char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) sha256_update(s, buf.data(), n);
  bool err = std::ferror(f);
  std::fclose(f);
  ENGINE_CHECK_IO(!err, "", "cannot read %s", path.c_str());
  return sha256_hex(s);
}

}  // namespace engine
