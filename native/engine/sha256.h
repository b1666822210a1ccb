// sha256.h — SHA-256 (FIPS 180-4) for checkpoint checksums, streamed while files are written and read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace engine {

struct Sha256 {
  uint32_t h[8];
  uint8_t buf[64];
  uint64_t len = 0;   // bytes hashed
  size_t fill = 0;    // bytes in buf
};

void sha256_init(Sha256& s);
void sha256_update(Sha256& s, const void* data, size_t n);
std::string sha256_hex(Sha256& s);  // finalises

}  // namespace engine
