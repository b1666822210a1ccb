// nccl.cuh — the few NCCL calls ZeRO data parallelism needs, loaded at run time with dlopen.
//
// Why dlopen and not -lnccl: the engine must build and run where NCCL is absent (CI, single-GPU hosts, the
// cpu-only addon), and NCCL ships in many places (the CUDA repos' libnccl2, PyTorch's nvidia-nccl wheel). A
// single-GPU run never touches this file's functions; a multi-GPU run loads libnccl.so.2 from
// $FINETUNE_NCCL_LIB, else the loader's search path, and fails with a message naming both when neither has it.
// The declarations below are NCCL 2.x's stable C ABI (nccl.h); when nccl.h is on the include path they are
// checked against it at compile time.
#pragma once
#include <dlfcn.h>
#include <cstdlib>
#include <mutex>
#include <string>
#include "cuda_common.cuh"

#if __has_include(<nccl.h>)
#include <nccl.h>
#define ENGINE_NCCL_H_CHECK 1
#endif

namespace cudabk {
namespace nccl {

typedef struct Comm_* Comm;  // ncclComm_t
struct UniqueId { char internal[128]; };
enum DataType : int { Uint64 = 5, Float32 = 7, Float64 = 8, BFloat16 = 9 };
enum RedOp : int { Sum = 0, Max = 2 };
typedef int Result;  // ncclResult_t: 0 = ncclSuccess

#ifdef ENGINE_NCCL_H_CHECK
static_assert(sizeof(UniqueId) == sizeof(ncclUniqueId), "ncclUniqueId size");
static_assert((int)ncclFloat32 == Float32 && (int)ncclFloat64 == Float64 && (int)ncclBfloat16 == BFloat16, "dtypes");
static_assert((int)ncclSum == Sum && (int)ncclMax == Max && (int)ncclSuccess == 0, "ncclSum / ncclMax / ncclSuccess");
static_assert((int)ncclUint64 == Uint64, "ncclUint64");
#endif

struct Api {
  void* lib = nullptr;
  std::string path;
  int version = 0;
  Result (*GetVersion)(int*);
  Result (*GetUniqueId)(UniqueId*);
  Result (*CommInitRank)(Comm*, int, UniqueId, int);
  Result (*CommDestroy)(Comm);
  Result (*CommAbort)(Comm);
  const char* (*GetErrorString)(Result);
  const char* (*GetLastError)(Comm);
  Result (*GroupStart)();
  Result (*GroupEnd)();
  Result (*AllReduce)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
  Result (*ReduceScatter)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
  Result (*AllGather)(const void*, void*, size_t, int, Comm, cudaStream_t);
  Result (*Broadcast)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
  Result (*Reduce)(const void*, void*, size_t, int, int, int, Comm, cudaStream_t);
};

// Loads libnccl once per process; throws Device naming where it looked.
inline const Api& api() {
  static Api a;
  static std::once_flag once;
  static std::string err;
  std::call_once(once, [] {
    const char* env = getenv("FINETUNE_NCCL_LIB");
    const char* names[] = {env && *env ? env : nullptr, "libnccl.so.2", "libnccl.so"};
    for (const char* n : names) {
      if (!n) continue;
      if ((a.lib = dlopen(n, RTLD_NOW | RTLD_GLOBAL))) { a.path = n; break; }
      err += std::string(n) + ": " + dlerror() + "; ";
    }
    if (!a.lib) return;
    bool ok = true;
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(a.lib, name));
      if (!fn) { ok = false; err += std::string("missing symbol ") + name + "; "; }
    };
    sym(a.GetVersion, "ncclGetVersion"); sym(a.GetUniqueId, "ncclGetUniqueId"); sym(a.CommInitRank, "ncclCommInitRank");
    sym(a.CommDestroy, "ncclCommDestroy"); sym(a.CommAbort, "ncclCommAbort"); sym(a.GetErrorString, "ncclGetErrorString");
    sym(a.GetLastError, "ncclGetLastError"); sym(a.GroupStart, "ncclGroupStart"); sym(a.GroupEnd, "ncclGroupEnd");
    sym(a.AllReduce, "ncclAllReduce"); sym(a.ReduceScatter, "ncclReduceScatter"); sym(a.AllGather, "ncclAllGather");
    sym(a.Broadcast, "ncclBroadcast"); sym(a.Reduce, "ncclReduce");
    if (!ok) { dlclose(a.lib); a.lib = nullptr; return; }
    a.GetVersion(&a.version);
  });
  if (!a.lib)
    fail_(ErrorCode::Device, "NCCL could not be loaded (" + err + ")",
          "install NCCL (Debian/Ubuntu: libnccl2 from the CUDA repository, or pip install nvidia-nccl-cu13) and set "
          "FINETUNE_NCCL_LIB to the full path of libnccl.so.2; one GPU without ZeRO needs no NCCL",
          __FILE__, __LINE__);
  return a;
}

inline void check_(Result r, const char* expr, Comm c, const char* file, int line) {
  if (r == 0) return;
  const Api& a = api();
  std::string last = c && a.GetLastError ? a.GetLastError(c) : "";
  fail_(ErrorCode::Device, std::string("NCCL error ") + a.GetErrorString(r) + " in " + expr + (last.empty() ? "" : ": " + last),
        "a failed collective leaves the communicator unusable: restart every rank of the run (NCCL_DEBUG=WARN shows more)",
        file, line);
}
#define NCCL_CHECK(x, comm) ::cudabk::nccl::check_((x), #x, (comm), __FILE__, __LINE__)

inline std::string to_hex(const UniqueId& id) {
  static const char* d = "0123456789abcdef";
  std::string s(256, '0');
  for (int i = 0; i < 128; i++) {
    unsigned char b = (unsigned char)id.internal[i];
    s[2 * i] = d[b >> 4], s[2 * i + 1] = d[b & 15];
  }
  return s;
}
inline UniqueId from_hex(const std::string& s) {
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  ENGINE_CHECK(s.size() == 256, BadConfig, "pass the string nccl_unique_id() returned on rank 0 unchanged",
               "parallelism NCCL unique id has %zu characters, expected 256 hex digits", s.size());
  UniqueId id;
  for (int i = 0; i < 128; i++) {
    int hi = val(s[2 * i]), lo = val(s[2 * i + 1]);
    ENGINE_CHECK(hi >= 0 && lo >= 0, BadConfig, "pass the string nccl_unique_id() returned on rank 0 unchanged",
                 "NCCL unique id: character %d is not a hex digit", 2 * i + (hi < 0 ? 0 : 1));
    id.internal[i] = (char)(hi * 16 + lo);
  }
  return id;
}

}  // namespace nccl
}  // namespace cudabk
