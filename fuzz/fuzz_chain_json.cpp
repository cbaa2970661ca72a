// The chain description written beside a .pth export (chain_json), read back by
// plain_from_chain_json (and import_pth). The network is built, so its size is bounded here.
#include "fuzz_common.h"
#include "rmnet/io/export.h"

RMNET_FUZZ_INIT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmnet::fuzz::expect_clean(
      [&] { rmnet::plain_from_chain_json(std::string(rmnet::fuzz::view(data, size)), "fuzz", int64_t{1} << 20); });
  return 0;
}
