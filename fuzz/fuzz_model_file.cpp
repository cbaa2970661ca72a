// An rmnet model file (the bytes load_model reads).
#include "fuzz_common.h"
#include "rmnet/io/model_file.h"

RMNET_FUZZ_INIT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmnet::fuzz::expect_clean([&] { rmnet::deserialize_model(std::string(rmnet::fuzz::view(data, size)), "fuzz"); });
  return 0;
}
