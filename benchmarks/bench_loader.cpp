// Throughput of the data pipeline alone: CIFAR-shaped uint8 images (3x32x32) in memory, the
// CIFAR training augmentation (pad 4, random crop, flip, normalise), batches of 256.
//   rmnet_bench_loader [workers=2] [images=50000] [epochs=3]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <torch/torch.h>

#include "rmnet/data/loader.h"

int main(int argc, char** argv) {
  const int64_t workers = argc > 1 ? std::atoll(argv[1]) : 2;
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 50000;
  const int epochs = argc > 3 ? std::atoi(argv[3]) : 3;
  auto images = torch::randint(0, 256, {n, 3, 32, 32}, torch::kUInt8);
  auto labels = torch::randint(0, 10, {n}, torch::kLong);
  auto ds = std::make_shared<rmnet::TensorDataset>(images, labels, 10);
  rmnet::DataLoader loader(ds, rmnet::random_crop_flip(4, rmnet::normalization_for("cifar10")),
                           rmnet::LoaderOptions().batch_size(256).workers(workers).seed(1));
  for (int e = 0; e < epochs; ++e) {
    const auto t0 = std::chrono::steady_clock::now();
    int64_t count = 0;
    loader.start_epoch(e);
    while (auto b = loader.next()) count += b->labels.size(0);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("epoch %d: %lld samples in %.2f s: %.0f samples/s (%lld workers)\n", e, static_cast<long long>(count),
                s, count / s, static_cast<long long>(workers));
  }
}
