#include "rmnet/data/cifar.h"

#include <filesystem>
#include <fstream>

#include <torch/torch.h>

namespace rmnet {

void read_cifar_file(const std::string& path, int64_t label_bytes, int64_t num_classes,
                     std::vector<torch::Tensor>& images, std::vector<torch::Tensor>& labels) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "'", path, "': no such file");
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "'", path, "': cannot open");
  std::string d((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const int64_t record = label_bytes + 3072;
  TORCH_CHECK(!d.empty() && static_cast<int64_t>(d.size()) % record == 0, "'", path, "': ", d.size(),
              " bytes is not a whole number of ", record, "-byte CIFAR records (truncated or not CIFAR)");
  const int64_t n = static_cast<int64_t>(d.size()) / record;
  auto img = torch::empty({n, 3, 32, 32}, torch::kUInt8);
  auto lbl = torch::empty({n}, torch::kLong);
  auto* ip = img.data_ptr<uint8_t>();
  auto* lp = lbl.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const auto* r = reinterpret_cast<const uint8_t*>(d.data()) + i * record;
    const int64_t label = r[label_bytes - 1];
    TORCH_CHECK(label < num_classes, "'", path, "': record ", i, " has label ", label, ", out of range [0, ",
                num_classes, ")");
    lp[i] = label;
    std::memcpy(ip + i * 3072, r + label_bytes, 3072);
  }
  images.push_back(img);
  labels.push_back(lbl);
}

namespace {
std::shared_ptr<TensorDataset> load(const std::string& dir, const std::vector<std::string>& files, int64_t label_bytes,
                                    int64_t classes, std::vector<std::string> names) {
  std::vector<torch::Tensor> images, labels;
  for (const auto& f : files) read_cifar_file((std::filesystem::path(dir) / f).string(), label_bytes, classes, images, labels);
  return std::make_shared<TensorDataset>(torch::cat(images), torch::cat(labels), classes, std::move(names));
}
}  // namespace

std::shared_ptr<TensorDataset> load_cifar10(const std::string& dir, bool train) {
  std::vector<std::string> files;
  if (train)
    for (int i = 1; i <= 5; ++i) files.push_back("data_batch_" + std::to_string(i) + ".bin");
  else
    files.push_back("test_batch.bin");
  return load(dir, files, 1, 10,
              {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"});
}

std::shared_ptr<TensorDataset> load_cifar100(const std::string& dir, bool train) {
  return load(dir, {train ? "train.bin" : "test.bin"}, 2, 100, {});
}

}  // namespace rmnet
