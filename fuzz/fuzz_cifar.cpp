// CIFAR binary record files. The first byte chooses CIFAR-10 (1 label byte, 10 classes) or
// CIFAR-100 (2 label bytes, 100 classes).
#include "fuzz_common.h"
#include "rmnet/data/cifar.h"

RMNET_FUZZ_INIT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool hundred = data[0] & 1;
  rmnet::fuzz::with_file(rmnet::fuzz::view(data + 1, size - 1), ".bin", [&](const std::string& path) {
    rmnet::fuzz::expect_clean([&] {
      std::vector<torch::Tensor> images, labels;
      rmnet::read_cifar_file(path, hundred ? 2 : 1, hundred ? 100 : 10, images, labels);
    });
  });
  return 0;
}
