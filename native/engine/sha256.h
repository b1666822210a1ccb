// sha256.h — SHA-256 (FIPS 180-4) for checkpoint checksums, streamed while files are written and read.
// OpenSSL's libcrypto does the hashing when the process can load it (dlopen, so it is no build dependency): with
// the SHA extensions it hashes ~1.3 GB/s on one core here, 5x the portable code below it (measured in
// bench/RESULTS.md), which matters when every save and load hashes a 70 GB state. Without libcrypto, the
// portable implementation; both give the same digests (native/test/test_formats.cpp checks both).
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
  void* evp = nullptr;  // OpenSSL EVP_MD_CTX when libcrypto is in use
  Sha256() = default;
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
};

void sha256_init(Sha256& s);
void sha256_update(Sha256& s, const void* data, size_t n);
std::string sha256_hex(Sha256& s);  // finalises

// Which implementation sha256_init picks: "openssl" when libcrypto loaded, else "portable". Tests force the
// portable one with sha256_force_portable(true) (also ENGINE_SHA256=portable in the environment).
const char* sha256_impl();
void sha256_force_portable(bool on);

}  // namespace engine
