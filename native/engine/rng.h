// rng.h — the engine's random numbers: a small, fully serialisable generator (SplitMix64 seeding a
// xoshiro256** state) so the RNG state is four integers in the checkpoint and resume restores it exactly
// (llm.c keeps a single xorshift state for the same reason). Not cryptographic.
#pragma once
#include <cmath>
#include <cstdint>

namespace engine {

struct Rng {
  uint64_t s[4];
};

inline uint64_t splitmix64_(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline void rng_seed(Rng& r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r.s[i] = splitmix64_(seed);
}

inline uint64_t rotl_(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

inline uint64_t rng_u64(Rng& r) {
  const uint64_t result = rotl_(r.s[1] * 5, 7) * 9;
  const uint64_t t = r.s[1] << 17;
  r.s[2] ^= r.s[0];
  r.s[3] ^= r.s[1];
  r.s[1] ^= r.s[2];
  r.s[0] ^= r.s[3];
  r.s[2] ^= t;
  r.s[3] = rotl_(r.s[3], 45);
  return result;
}

// Uniform in [0, 1) with 53 random bits.
inline double rng_uniform(Rng& r) { return (rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

// Uniform integer in [0, n) (Lemire's multiply-shift; the tiny bias is irrelevant for shuffling and sampling).
inline uint64_t rng_below(Rng& r, uint64_t n) { return (uint64_t)(((__uint128_t)rng_u64(r) * n) >> 64); }

// Standard normal via Box-Muller (one value per call; keeps the state a pure function of the call count).
inline double rng_normal(Rng& r) {
  double u1 = rng_uniform(r), u2 = rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace engine
