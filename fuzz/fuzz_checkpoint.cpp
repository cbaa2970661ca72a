// A training checkpoint, read with load_checkpoint from a file.
#include "fuzz_common.h"
#include "rmnet/train/checkpoint.h"

RMNET_FUZZ_INIT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmnet::fuzz::with_file(rmnet::fuzz::view(data, size), ".ckpt", [](const std::string& path) {
    rmnet::fuzz::expect_clean([&] { rmnet::load_checkpoint(path); });
  });
  return 0;
}
