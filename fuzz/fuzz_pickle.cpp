// The bare pickle of a state_dict (data.pkl inside a torch.save archive), through rmnet's reader.
// Storages come from a stand-in loader (zeros of the stated size, bounded), so every input reaches
// the pickle machine itself.
#include "fuzz_common.h"
#include "io/pickle.h"

RMNET_FUZZ_INIT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmnet::fuzz::expect_clean([&] {
    rmnet::detail::unpickle_state_dict(rmnet::fuzz::view(data, size),
                                       [](const std::string&, torch::ScalarType dtype, int64_t numel) {
                                         TORCH_CHECK(numel <= 4096, "storage too large for the harness");
                                         return torch::zeros({numel}, torch::TensorOptions().dtype(dtype));
                                       });
  });
  return 0;
}
