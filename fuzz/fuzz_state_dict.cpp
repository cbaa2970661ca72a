// A torch.save state_dict archive (zip + data.pkl + data/<key> records), read from memory the way
// read_state_dict reads a file. TorchScript archives are left out: read_state_dict hands them to
// torch::jit::load, LibTorch's own (uninstrumented) deserializer, which is not rmnet's to fix.
#include <sstream>

#include <caffe2/serialize/inline_container.h>

#include "fuzz_common.h"
#include "io/pickle.h"

RMNET_FUZZ_INIT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmnet::fuzz::expect_clean([&] {
    std::istringstream in(std::string(rmnet::fuzz::view(data, size)));
    caffe2::serialize::PyTorchStreamReader zip(&in);
    if (rmnet::detail::is_torchscript_archive(zip)) return;
    rmnet::detail::read_state_dict_archive(zip, size);
  });
  return 0;
}
