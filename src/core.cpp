#include "rmnet/core.h"

#include <charconv>
#include <cstdlib>
#include <thread>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "rmnet/version.h"

namespace rmnet {

std::string version() { return RMNET_VERSION; }

int set_threads(int n) {
  if (n <= 0) {
    // Like PyTorch: OMP_NUM_THREADS, when set to a positive number, is the default.
    const char* env = std::getenv("OMP_NUM_THREADS");
    n = env ? std::atoi(env) : 0;
    if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  at::set_num_threads(n);
  return at::get_num_threads();
}

void set_deterministic(bool on) {
  auto& ctx = at::globalContext();
  ctx.setDeterministicCuDNN(on);
  ctx.setBenchmarkCuDNN(false);
  ctx.setAllowTF32CuDNN(!on);  // PyTorch's default lets cuDNN convolutions use TF32
  ctx.setAllowTF32CuBLAS(false);
  ctx.setDeterministicAlgorithms(on, /*warn_only=*/true);
}

std::string error_message(const std::exception& e) {
  if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  return e.what();
}

std::optional<int64_t> metadata_int(const std::map<std::string, std::string>& metadata, const std::string& key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) return std::nullopt;
  const std::string& v = it->second;
  int64_t out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  TORCH_CHECK(ec == std::errc() && end == v.data() + v.size() && !v.empty(), "metadata '", key,
              "' is not an integer: '", v, "'");
  return out;
}

}  // namespace rmnet
