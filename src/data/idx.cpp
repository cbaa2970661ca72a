#include "rmnet/data/idx.h"

#include <zlib.h>

#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

namespace rmnet {
namespace {

/// Reads a whole file, gunzipping it if it is gzip-compressed (zlib reads plain files as they are).
std::string read_maybe_gz(const std::string& path) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "'", path, "': no such file");
  gzFile f = gzopen(path.c_str(), "rb");
  TORCH_CHECK(f, "'", path, "': cannot open");
  std::string data;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) data.append(buf, static_cast<size_t>(n));
  int err = 0;
  const char* msg = gzerror(f, &err);
  const bool failed = n < 0 || (err != Z_OK && err != Z_STREAM_END);
  const std::string why = failed ? msg : "";
  gzclose(f);
  TORCH_CHECK(!failed, "'", path, "': corrupt or truncated gzip data (", why, ")");
  return data;
}

uint32_t be32(const std::string& d, size_t off) {
  return (uint32_t(uint8_t(d[off])) << 24) | (uint32_t(uint8_t(d[off + 1])) << 16) |
         (uint32_t(uint8_t(d[off + 2])) << 8) | uint32_t(uint8_t(d[off + 3]));
}

/// Checks the IDX header and returns the dimensions.
std::vector<int64_t> idx_header(const std::string& d, const std::string& path, uint32_t magic, size_t ndim) {
  TORCH_CHECK(d.size() >= 4 + 4 * ndim, "'", path, "': truncated IDX header (", d.size(), " bytes)");
  TORCH_CHECK(be32(d, 0) == magic, "'", path, "': wrong IDX magic number 0x", std::hex, be32(d, 0),
              " (expected 0x", magic, std::dec, ")");
  std::vector<int64_t> dims;
  // The product is checked against the bytes present dimension by dimension, so it cannot overflow.
  const size_t data = d.size() - 4 - 4 * ndim;
  size_t total = 1;
  bool fits = true;
  for (size_t i = 0; i < ndim; ++i) {
    dims.push_back(be32(d, 4 + 4 * i));
    const auto n = static_cast<size_t>(dims.back());
    if (n != 0 && total > data / n) fits = false;
    if (fits) total *= n;
  }
  const size_t expected = 4 + 4 * ndim + total;
  TORCH_CHECK(fits && d.size() >= expected, "'", path, "': truncated (", d.size(), " bytes, the header announces ",
              fmt::format("{}", fmt::join(dims, " x ")), " values after ", 4 + 4 * ndim, " header bytes)");
  return dims;
}

std::string find_split_file(const std::string& dir, const std::string& stem) {
  for (const auto& name : {stem, stem + ".gz"}) {
    const auto p = std::filesystem::path(dir) / name;
    if (std::filesystem::is_regular_file(p)) return p.string();
  }
  TORCH_CHECK(false, "'", dir, "': no ", stem, " or ", stem, ".gz");
}

}  // namespace

torch::Tensor read_idx_images(const std::string& path) {
  const auto d = read_maybe_gz(path);
  const auto dims = idx_header(d, path, 0x00000803, 3);
  auto t = torch::empty({dims[0], 1, dims[1], dims[2]}, torch::kUInt8);
  if (t.numel() > 0) std::memcpy(t.data_ptr<uint8_t>(), d.data() + 16, static_cast<size_t>(t.numel()));
  return t;
}

torch::Tensor read_idx_labels(const std::string& path) {
  const auto d = read_maybe_gz(path);
  const auto dims = idx_header(d, path, 0x00000801, 1);
  auto t = torch::empty({dims[0]}, torch::kUInt8);
  if (t.numel() > 0) std::memcpy(t.data_ptr<uint8_t>(), d.data() + 8, static_cast<size_t>(t.numel()));
  return t.to(torch::kLong);
}

std::shared_ptr<TensorDataset> load_mnist(const std::string& dir, bool train, std::vector<std::string> class_names) {
  const std::string prefix = train ? "train" : "t10k";
  const auto img_path = find_split_file(dir, prefix + "-images-idx3-ubyte");
  const auto lbl_path = find_split_file(dir, prefix + "-labels-idx1-ubyte");
  auto images = read_idx_images(img_path);
  auto labels = read_idx_labels(lbl_path);
  TORCH_CHECK(images.size(0) == labels.size(0), "'", img_path, "' has ", images.size(0), " images but '", lbl_path,
              "' has ", labels.size(0), " labels");
  if (labels.numel() > 0) {
    const auto hi = labels.max().item<int64_t>();
    TORCH_CHECK(hi < 10, "'", lbl_path, "': label ", hi, " out of range [0, 10)");
  }
  return std::make_shared<TensorDataset>(images, labels, 10, std::move(class_names));
}

std::vector<std::string> fashion_mnist_classes() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

}  // namespace rmnet
