// A deployed network shared by several threads (a server's use): every runtime (onednn, torchscript,
// INT8) gives each thread exactly what a serial run gives, with batch sizes and input sizes mixed
// across threads (the per-shape packing caches and the buffer caches are shared); and the
// process-wide buffer-cache switch (set_buffer_cache_enabled) takes effect for networks deployed after.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include <torch/torch.h>

#include "helpers.h"
#include "rmnet/convert/rm.h"
#include "rmnet/deploy/int8.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/quant/quantize.h"

using namespace rmnet;

namespace {

std::vector<torch::Tensor> inputs() {
  torch::manual_seed(21);
  std::vector<torch::Tensor> xs;
  for (int64_t batch : {1, 3, 8})
    for (int64_t size : {32, 24, 40}) xs.push_back(torch::randn({batch, 3, size, size}) * 2.0);
  return xs;
}

/// Runs every input on `threads` threads, each in its own order, `reps` times; every result must
/// equal the serial one bit for bit.
void expect_thread_safe(ModelImpl& net, const std::string& label, int threads = 4, int reps = 3) {
  torch::NoGradGuard g;
  const auto xs = inputs();
  std::vector<torch::Tensor> serial;
  for (const auto& x : xs) serial.push_back(net.forward(x).clone());
  std::vector<int> mismatches(threads, 0), errors(threads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      torch::NoGradGuard ng;
      try {
        for (int r = 0; r < reps; ++r)
          for (size_t k = 0; k < xs.size(); ++k) {
            const size_t i = (k * (t + 1) + r) % xs.size();  // a different order per thread
            auto y = net.forward(xs[i]);
            if (!torch::equal(y, serial[i])) ++mismatches[t];
          }
      } catch (const std::exception&) {
        ++errors[t];
      }
    });
  }
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t) {
    EXPECT_EQ(errors[t], 0) << label << " thread " << t;
    EXPECT_EQ(mismatches[t], 0) << label << " thread " << t;
  }
}

PlainNet plain_resnet8() {
  auto m = test::random_model("resnet8", torch::kFloat);
  auto r = convert(*m);
  EXPECT_TRUE(r.report.passed);
  r.plain->eval();
  return r.plain;
}

}  // namespace

TEST(Concurrency, ADeployedNetworkServesThreadsAsASerialRunDoes) {
  auto net = plain_resnet8();
  for (auto rt : {Runtime::OneDNN, Runtime::TorchScript}) {
    if (rt == Runtime::OneDNN && !onednn_available(DeployOptions())) continue;
    auto d = deploy(*net, DeployOptions().runtime(rt));
    expect_thread_safe(*d, to_string(rt));
  }
  if (int8_runtime_available()) {
    torch::manual_seed(3);
    auto q = quantize(*net, torch::randn({16, 3, 32, 32}), QuantizeOptions());
    Int8Net exec(*q.net);
    expect_thread_safe(*exec, "int8");
  }
}

TEST(Concurrency, BufferCacheSwitchIsProcessWide) {
  auto net = plain_resnet8();
  ASSERT_TRUE(buffer_cache_enabled());  // the default (RMNET_BUFFER_CACHE unset in the tests)
  set_buffer_cache_enabled(false);
  auto off = deploy(*net, DeployOptions().runtime(Runtime::TorchScript).buffer_cache_mb(64));
  torch::NoGradGuard g;
  const auto x = torch::randn({8, 3, 64, 64});
  off->forward(x);
  off->forward(x);
  EXPECT_EQ(off->buffer_cache_stats().reuses, 0);
  EXPECT_EQ(off->buffer_cache_stats().allocations, 0);
  set_buffer_cache_enabled(true);
  auto on = deploy(*net, DeployOptions().runtime(Runtime::TorchScript).buffer_cache_mb(64));
  on->forward(x);
  on->forward(x);
  EXPECT_GT(on->buffer_cache_stats().reuses, 0);
  EXPECT_TRUE(torch::equal(on->forward(x), off->forward(x)));
}
