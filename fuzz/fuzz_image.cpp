// The image decoder path of ImageFolder and the Classifier (read_image: OpenCV's imread, then the
// conversion to a [C, H, W] tensor). The first byte chooses gray or colour. OpenCV's decoders are
// Debian's build (not instrumented): this target checks rmnet's side and catches crashes there.
#include "fuzz_common.h"
#include "rmnet/data/image_folder.h"

RMNET_FUZZ_INIT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int64_t channels = (data[0] & 1) ? 1 : 3;
  rmnet::fuzz::with_file(rmnet::fuzz::view(data + 1, size - 1), ".img", [&](const std::string& path) {
    rmnet::fuzz::expect_clean([&] { rmnet::read_image(path, channels); });
  });
  return 0;
}
