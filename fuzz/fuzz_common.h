#pragma once
// Shared by the fuzz targets: one intra-op thread, a temporary file for readers that take a path,
// and the contract every reader is held to: bad input is a c10::Error (a clear message), nothing
// else. Any other exception escapes LLVMFuzzerTestOneInput and libFuzzer reports it as a crash,
// as it does for every sanitizer report and leak.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <c10/util/Exception.h>
#include <torch/torch.h>

namespace rmnet::fuzz {

inline void init() {
  torch::set_num_threads(1);
  c10::ShowLogInfoToStderr();
}

/// Runs f; a c10::Error (the readers' answer to bad input) is the expected outcome.
template <typename F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const c10::Error&) {
  }
}

/// Writes the bytes to a file of this process (name ending in `suffix`), runs f(path), removes it.
template <typename F>
void with_file(std::string_view bytes, const std::string& suffix, F&& f) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string path = (dir / ("rmnet-fuzz-" + std::to_string(::getpid()) + suffix)).string();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  try {
    f(path);
  } catch (...) {
    std::remove(path.c_str());
    throw;
  }
  std::remove(path.c_str());
}

inline std::string_view view(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace rmnet::fuzz

#define RMNET_FUZZ_INIT                                     \
  extern "C" int LLVMFuzzerInitialize(int*, char***) {     \
    rmnet::fuzz::init();                                    \
    return 0;                                               \
  }
