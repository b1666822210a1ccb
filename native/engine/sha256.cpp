// sha256.cpp — SHA-256 through OpenSSL's libcrypto when it loads, else a straightforward portable one (sha256.h).
#include "sha256.h"
#include <dlfcn.h>
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include "errors.h"

namespace engine {

// ---- libcrypto, loaded once (EVP API of OpenSSL 1.1 and 3; prototypes declared here: no headers needed)
namespace {
struct Crypto {
  void* (*md_ctx_new)() = nullptr;
  void (*md_ctx_free)(void*) = nullptr;
  const void* (*sha256)() = nullptr;
  int (*init)(void*, const void*, void*) = nullptr;
  int (*update)(void*, const void*, size_t) = nullptr;
  int (*final)(void*, unsigned char*, unsigned int*) = nullptr;
  bool ok = false;
};

const Crypto& crypto() {
  static const Crypto c = [] {
    Crypto k;
    const char* env = std::getenv("ENGINE_SHA256");
    if (env && std::strcmp(env, "portable") == 0) return k;
    // A process that already has OpenSSL (Node exports its own, statically linked) is used as it is: a second
    // libcrypto loaded beside it could bind some of its symbols to the first. Else the system's libcrypto.
    void* h = dlsym(RTLD_DEFAULT, "EVP_MD_CTX_new") && dlsym(RTLD_DEFAULT, "EVP_DigestFinal_ex") ? RTLD_DEFAULT : nullptr;
    for (const char* name : {"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so"})
      if (!h) h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) return k;
    k.md_ctx_new = (void* (*)())dlsym(h, "EVP_MD_CTX_new");
    k.md_ctx_free = (void (*)(void*))dlsym(h, "EVP_MD_CTX_free");
    k.sha256 = (const void* (*)())dlsym(h, "EVP_sha256");
    k.init = (int (*)(void*, const void*, void*))dlsym(h, "EVP_DigestInit_ex");
    k.update = (int (*)(void*, const void*, size_t))dlsym(h, "EVP_DigestUpdate");
    k.final = (int (*)(void*, unsigned char*, unsigned int*))dlsym(h, "EVP_DigestFinal_ex");
    k.ok = k.md_ctx_new && k.md_ctx_free && k.sha256 && k.init && k.update && k.final;
    return k;
  }();
  return c;
}

std::atomic<bool> g_force_portable{false};
bool use_openssl() { return !g_force_portable.load(std::memory_order_relaxed) && crypto().ok; }
}  // namespace

const char* sha256_impl() { return use_openssl() ? "openssl" : "portable"; }
void sha256_force_portable(bool on) { g_force_portable.store(on); }

Sha256::~Sha256() {
  if (evp) crypto().md_ctx_free(evp);
}

static const uint32_t K_[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static inline uint32_t ror_(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void block_(Sha256& s, const uint8_t* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ror_(w[i - 15], 7) ^ ror_(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ror_(w[i - 2], 17) ^ ror_(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = s.h[0], b = s.h[1], c = s.h[2], d = s.h[3], e = s.h[4], f = s.h[5], g = s.h[6], h = s.h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t S1 = ror_(e, 6) ^ ror_(e, 11) ^ ror_(e, 25);
    uint32_t ch = (e & f) ^ (~e & g);
    uint32_t t1 = h + S1 + ch + K_[i] + w[i];
    uint32_t S0 = ror_(a, 2) ^ ror_(a, 13) ^ ror_(a, 22);
    uint32_t mj = (a & b) ^ (a & c) ^ (b & c);
    uint32_t t2 = S0 + mj;
    h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  s.h[0] += a; s.h[1] += b; s.h[2] += c; s.h[3] += d; s.h[4] += e; s.h[5] += f; s.h[6] += g; s.h[7] += h;
}

void sha256_init(Sha256& s) {
  if (s.evp) crypto().md_ctx_free(s.evp), s.evp = nullptr;
  if (use_openssl()) {
    const Crypto& c = crypto();
    s.evp = c.md_ctx_new();
    ENGINE_CHECK(s.evp && c.init(s.evp, c.sha256(), nullptr) == 1, Internal, "", "OpenSSL SHA-256 init failed");
    return;
  }
  static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::memcpy(s.h, H0, sizeof H0);
  s.len = 0;
  s.fill = 0;
}

void sha256_update(Sha256& s, const void* data, size_t n) {
  if (s.evp) {
    ENGINE_CHECK(crypto().update(s.evp, data, n) == 1, Internal, "", "OpenSSL SHA-256 update failed");
    return;
  }
  const uint8_t* p = (const uint8_t*)data;
  s.len += n;
  if (s.fill) {
    size_t k = std::min(n, 64 - s.fill);
    std::memcpy(s.buf + s.fill, p, k);
    s.fill += k; p += k; n -= k;
    if (s.fill < 64) return;
    block_(s, s.buf);
    s.fill = 0;
  }
  while (n >= 64) { block_(s, p); p += 64; n -= 64; }
  if (n) { std::memcpy(s.buf, p, n); s.fill = n; }
}

static std::string hex_(const uint8_t* d, size_t n) {
  static const char* hx = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; i++) out += hx[d[i] >> 4], out += hx[d[i] & 0xF];
  return out;
}

std::string sha256_hex(Sha256& s) {
  if (s.evp) {
    unsigned char d[32];
    unsigned int n = 0;
    ENGINE_CHECK(crypto().final(s.evp, d, &n) == 1 && n == 32, Internal, "", "OpenSSL SHA-256 final failed");
    crypto().md_ctx_free(s.evp);
    s.evp = nullptr;
    return hex_(d, 32);
  }
  uint64_t bits = s.len * 8;
  uint8_t pad = 0x80;
  sha256_update(s, &pad, 1);
  uint8_t zero = 0;
  while (s.fill != 56) sha256_update(s, &zero, 1);
  uint8_t lenb[8];
  for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha256_update(s, lenb, 8);
  uint8_t d[32];
  for (int i = 0; i < 8; i++)
    for (int k = 0; k < 4; k++) d[4 * i + k] = (uint8_t)(s.h[i] >> (24 - 8 * k));
  return hex_(d, 32);
}

}  // namespace engine
