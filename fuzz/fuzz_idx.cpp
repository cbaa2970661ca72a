// MNIST-style IDX files, raw and gzip. The first byte chooses images or labels (bit 0) and whether
// the rest is gzip-compressed by the harness first (bit 1), so mutations of the IDX content reach
// the reader through the gzip path too; bit 2 writes the rest as it is (gzip data from the corpus).
#include <zlib.h>

#include "fuzz_common.h"
#include "rmnet/data/idx.h"

RMNET_FUZZ_INIT

namespace {
std::string gzip(std::string_view raw) {
  z_stream z{};
  deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, raw.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const auto rest = rmnet::fuzz::view(data + 1, size - 1);
  const std::string bytes = (mode & 2) && !(mode & 4) ? gzip(rest) : std::string(rest);
  rmnet::fuzz::with_file(bytes, (mode & 6) ? ".gz" : "", [&](const std::string& path) {
    rmnet::fuzz::expect_clean([&] {
      if (mode & 1)
        rmnet::read_idx_labels(path);
      else
        rmnet::read_idx_images(path);
    });
  });
  return 0;
}
