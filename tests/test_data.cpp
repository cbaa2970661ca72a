// Data: IDX (raw and gzip), CIFAR records, image folders, transforms, the loader. Every file is
// written by the test itself; corrupt inputs must give errors that name the file.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include <opencv2/imgcodecs.hpp>

#include "helpers.h"
#include "rmnet/data/cifar.h"
#include "rmnet/data/datasets.h"
#include "rmnet/data/idx.h"
#include "rmnet/data/image_folder.h"
#include "rmnet/data/loader.h"

using namespace rmnet;
using rmnet::test::error_of;
namespace fs = std::filesystem;

namespace {

std::string be32(uint32_t v) {
  return {char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}

void write_file(const std::string& path, const std::string& bytes, bool gz = false) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary) << bytes;
  }
}

/// IDX images [n, h, w] with pixel value (i * 7 + y * w + x) % 256, and labels i % 10.
std::pair<std::string, std::string> idx_bytes(uint32_t n, uint32_t h, uint32_t w, int label_offset = 0) {
  std::string img = be32(0x803) + be32(n) + be32(h) + be32(w), lbl = be32(0x801) + be32(n);
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t p = 0; p < h * w; ++p) img.push_back(char((i * 7 + p) % 256));
    lbl.push_back(char(i % 10 + label_offset));
  }
  return {img, lbl};
}

struct TempDir {
  std::string path = rmnet::test::temp_path("data");
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (fs::path(path) / name).string(); }
};

}  // namespace

TEST(Data, IdxRawAndGzip) {
  TempDir dir;
  auto [img, lbl] = idx_bytes(12, 5, 4);
  write_file(dir / "train-images-idx3-ubyte", img);
  write_file(dir / "train-labels-idx1-ubyte.gz", lbl, true);
  write_file(dir / "t10k-images-idx3-ubyte.gz", img, true);
  write_file(dir / "t10k-labels-idx1-ubyte", lbl);
  for (bool train : {true, false}) {
    auto ds = load_mnist(dir.path, train);
    ASSERT_EQ(ds->size(), 12u);
    EXPECT_EQ(ds->channels(), 1);
    auto s = ds->get(3);
    EXPECT_EQ(s.label, 3);
    EXPECT_EQ(s.image.sizes(), (std::vector<int64_t>{1, 5, 4}));
    EXPECT_EQ(s.image[0][1][2].item<int>(), (3 * 7 + 1 * 4 + 2) % 256);
  }
}

TEST(Data, IdxErrorsNameTheFile) {
  TempDir dir;
  auto [img, lbl] = idx_bytes(4, 3, 3);
  const auto bad_magic = dir / "bad-magic";
  write_file(bad_magic, be32(0x804) + img.substr(4));
  auto msg = error_of([&] { read_idx_images(bad_magic); });
  EXPECT_NE(msg.find(bad_magic), std::string::npos) << msg;
  EXPECT_NE(msg.find("magic"), std::string::npos) << msg;

  const auto truncated = dir / "truncated";
  write_file(truncated, img.substr(0, img.size() - 5));
  msg = error_of([&] { read_idx_images(truncated); });
  EXPECT_NE(msg.find(truncated), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  const auto corrupt_gz = dir / "corrupt.gz";
  write_file(corrupt_gz, img, true);
  std::string gz;
  {
    std::ifstream in(corrupt_gz, std::ios::binary);
    gz.assign(std::istreambuf_iterator<char>(in), {});
  }
  write_file(corrupt_gz, gz.substr(0, gz.size() / 2));
  msg = error_of([&] { read_idx_images(corrupt_gz); });
  EXPECT_NE(msg.find(corrupt_gz), std::string::npos) << msg;

  auto [img2, lbl2] = idx_bytes(4, 3, 3, /*label_offset=*/7);  // labels 7..10: 10 is out of range
  write_file(dir / "train-images-idx3-ubyte", img2);
  write_file(dir / "train-labels-idx1-ubyte", lbl2);
  msg = error_of([&] { load_mnist(dir.path, true); });
  EXPECT_NE(msg.find("train-labels-idx1-ubyte"), std::string::npos) << msg;
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;

  msg = error_of([&] { load_mnist(dir / "nowhere", true); });
  EXPECT_NE(msg.find("nowhere"), std::string::npos) << msg;
}

TEST(Data, CifarRecords) {
  TempDir dir;
  std::string bytes;
  for (int i = 0; i < 3; ++i) {
    bytes.push_back(char(i + 4));
    for (int p = 0; p < 3072; ++p) bytes.push_back(char((i + p) % 251));
  }
  write_file(dir / "test_batch.bin", bytes);
  auto ds = load_cifar10(dir.path, false);
  ASSERT_EQ(ds->size(), 3u);
  auto s = ds->get(2);
  EXPECT_EQ(s.label, 6);
  EXPECT_EQ(s.image.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(s.image[1][0][5].item<int>(), (2 + 1024 + 5) % 251);  // G plane

  // CIFAR-100: coarse + fine label bytes; the fine label is used
  std::string c100;
  c100.push_back(char(3));
  c100.push_back(char(87));
  c100.append(3072, char(1));
  write_file(dir / "test.bin", c100);
  EXPECT_EQ(load_cifar100(dir.path, false)->get(0).label, 87);

  write_file(dir / "test_batch.bin", bytes.substr(0, bytes.size() - 1));
  auto msg = error_of([&] { load_cifar10(dir.path, false); });
  EXPECT_NE(msg.find("test_batch.bin"), std::string::npos) << msg;
  bytes[0] = char(10);
  write_file(dir / "test_batch.bin", bytes);
  msg = error_of([&] { load_cifar10(dir.path, false); });
  EXPECT_NE(msg.find("label 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test_batch.bin"), std::string::npos) << msg;
}

TEST(Data, ImageFolder) {
  TempDir dir;
  fs::create_directories(dir / "cat");
  fs::create_directories(dir / "dog");
  cv::Mat red(6, 8, CV_8UC3, cv::Scalar(0, 0, 255));  // BGR: red
  cv::Mat blue(5, 5, CV_8UC3, cv::Scalar(255, 0, 0));
  ASSERT_TRUE(cv::imwrite(dir / "cat/a.png", red));
  ASSERT_TRUE(cv::imwrite(dir / "dog/b.jpg", blue));
  ASSERT_TRUE(cv::imwrite(dir / "dog/c.PNG", blue));
  write_file(dir / "dog/notes.txt", "not an image");
  ImageFolder ds(dir.path);
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"cat", "dog"}));
  ASSERT_EQ(ds.size(), 3u);
  auto s = ds.get(0);
  EXPECT_EQ(s.label, 0);
  EXPECT_EQ(s.image.sizes(), (std::vector<int64_t>{3, 6, 8}));
  EXPECT_EQ(s.image[0][2][3].item<int>(), 255);  // RGB order: red first
  EXPECT_EQ(s.image[2][2][3].item<int>(), 0);
  EXPECT_EQ(ds.get(1).label, 1);

  write_file(dir / "dog/broken.png", "garbage");
  ImageFolder ds2(dir.path);
  size_t broken = 0;
  for (size_t i = 0; i < ds2.size(); ++i)
    if (ds2.path(i).find("broken") != std::string::npos) broken = i;
  auto msg = error_of([&] { ds2.get(broken); });
  EXPECT_NE(msg.find("broken.png"), std::string::npos) << msg;

  fs::create_directories(dir / "empty");
  msg = error_of([&] { ImageFolder bad(dir.path); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no image"), std::string::npos) << msg;
}

TEST(Data, Transforms) {
  auto img = torch::randint(0, 256, {3, 8, 8}, torch::kUInt8);
  Normalization n{{0.5, 0.4, 0.3}, {0.2, 0.25, 0.3}};
  Rng rng(1);
  auto x = normalize(n)(img, rng);
  auto ref = (img.to(torch::kFloat) / 255 - torch::tensor({0.5, 0.4, 0.3}).view({3, 1, 1})) /
             torch::tensor({0.2, 0.25, 0.3}).view({3, 1, 1});
  EXPECT_TRUE(torch::allclose(x, ref.to(torch::kFloat), 1e-5, 1e-5));
  // padding 0 and no flip: the identity crop
  EXPECT_TRUE(torch::allclose(random_crop_flip(0, n, false)(img, rng), x));
  // padded crops keep the size and are shifted copies
  auto c = random_crop_flip(2, n, true)(img, rng);
  EXPECT_EQ(c.sizes(), x.sizes());
  auto rr = random_resized_crop_flip(5, n)(img, rng);
  EXPECT_EQ(rr.sizes(), (std::vector<int64_t>{3, 5, 5}));
  auto cc = resize_center_crop(8, 6, n)(img, rng);
  EXPECT_TRUE(torch::allclose(cc, x.slice(1, 1, 7).slice(2, 1, 7)));
}

TEST(Data, LoaderIsDeterministicForAnyWorkerCount) {
  auto images = torch::randint(0, 256, {37, 1, 6, 6}, torch::kUInt8);
  auto labels = torch::arange(37) % 5;
  auto ds = std::make_shared<TensorDataset>(images, labels, 5);
  auto t = random_crop_flip(1, {{0.5}, {0.5}});
  std::vector<std::vector<torch::Tensor>> runs;
  for (int64_t workers : {0, 1, 3}) {
    DataLoader loader(ds, t, LoaderOptions().batch_size(8).workers(workers).seed(42));
    EXPECT_EQ(loader.batches_per_epoch(), 5u);
    loader.start_epoch(2);
    std::vector<torch::Tensor> got;
    int64_t count = 0;
    while (auto b = loader.next()) {
      got.push_back(b->images);
      got.push_back(b->labels);
      count += b->labels.size(0);
    }
    EXPECT_EQ(count, 37);
    runs.push_back(got);
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    ASSERT_EQ(runs[r].size(), runs[0].size());
    for (size_t i = 0; i < runs[0].size(); ++i) EXPECT_TRUE(torch::equal(runs[r][i], runs[0][i]));
  }
  // drop_last, shards, and another epoch gives another order
  DataLoader dl(ds, t, LoaderOptions().batch_size(8).drop_last(true).seed(42));
  EXPECT_EQ(dl.batches_per_epoch(), 4u);
  DataLoader shard(ds, t, LoaderOptions().batch_size(4).num_shards(2).shard(1));
  EXPECT_EQ(shard.samples_per_epoch(), 18u);
  DataLoader other(ds, t, LoaderOptions().batch_size(8).workers(1).seed(42));
  other.start_epoch(3);
  EXPECT_FALSE(torch::equal(other.next()->labels, runs[0][1]));
}

TEST(Data, SubsetIsThePrefix) {
  auto base = test::quadrants(10, 1);
  Subset first(base, 4);
  EXPECT_EQ(first.size(), 4u);
  EXPECT_EQ(first.num_classes(), 4);
  EXPECT_EQ(first.channels(), 1);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(torch::equal(first.get(i).image, base->get(i).image));
    EXPECT_EQ(first.get(i).label, base->get(i).label);
  }
  EXPECT_NE(error_of([&] { first.get(4); }).find("out of range"), std::string::npos);
  EXPECT_EQ(Subset(base, 100).size(), 10u);  // more than there is: all of it
}

TEST(Data, PreprocessForADataSet) {
  auto test_set = test::quadrants(2, 1);
  const auto p = preprocess_for("fashion-mnist", *test_set);
  EXPECT_EQ(p.crop, 12);  // the side of the test images
  EXPECT_EQ(p.resize, 12);
  EXPECT_EQ(p.mean, normalization_for("fashion-mnist").mean);
  EXPECT_EQ(p.std, normalization_for("fashion-mnist").std);
  const auto f = preprocess_for("folder", *test_set, 224);
  EXPECT_EQ(f.crop, 224);
  EXPECT_EQ(f.resize, 256);
  EXPECT_EQ(preprocess_for("folder", *test_set).crop, 224);  // the folder default
  const auto r = preprocess_for("fashion-mnist", *test_set, 64);  // resized to 64x64
  EXPECT_EQ(r.crop, 64);
  EXPECT_EQ(r.resize, 64);
  EXPECT_EQ(image_size_for("fashion-mnist", 0), 28);
  EXPECT_EQ(image_size_for("cifar10", 0), 32);
  EXPECT_EQ(image_size_for("folder", 0), 224);
  EXPECT_EQ(image_size_for("mnist", 64), 64);
  EXPECT_NE(error_of([] { image_size_for("mnist", -1); }).find("image size"), std::string::npos);
}

// --image-size on a fixed-size data set: the augmented (or plain) image, normalised, then resized
// bilinearly with half-pixel centres (torchvision's Resize on tensors): a constant image stays
// constant, a 2x enlargement of [a, b] along a row is [a, .75a+.25b, .25a+.75b, b]; an image of
// the target side passes unchanged; the training transform's randomness is the native one's.
TEST(Data, ResizedTransformsOfFixedSizeDataSets) {
  Rng rng(3);
  auto img = torch::zeros({1, 2, 2}, torch::kUInt8);
  img[0][0][1] = 255;
  img[0][1][1] = 255;  // left column 0, right column 255
  const auto norm = normalization_for("fashion-mnist");
  const auto small = eval_transform("fashion-mnist")(img, rng);
  EXPECT_EQ(small.sizes(), (std::vector<int64_t>{1, 2, 2}));
  const auto big = eval_transform("fashion-mnist", 4)(img, rng);
  ASSERT_EQ(big.sizes(), (std::vector<int64_t>{1, 4, 4}));
  const double a = small[0][0][0].item<double>(), b = small[0][0][1].item<double>();
  const std::vector<double> row = {a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b};
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 0; x < 4; ++x) EXPECT_NEAR(big[0][y][x].item<double>(), row[x], 1e-5) << y << "," << x;
  EXPECT_NEAR(a, -norm.mean[0] / norm.std[0], 1e-6);
  EXPECT_TRUE(eval_transform("fashion-mnist", 2)(img, rng).equal(small));  // already that side
  // training: the same crop and flip draws as without the resize, then the resize
  const auto plain = train_transform("fashion-mnist")(torch::randint(0, 256, {1, 28, 28}, torch::kUInt8), rng);
  Rng r1(9), r2(9);
  const auto x = torch::randint(0, 256, {1, 28, 28}, torch::kUInt8);
  const auto native = train_transform("fashion-mnist")(x, r1), resized = train_transform("fashion-mnist", 64)(x, r2);
  ASSERT_EQ(resized.sizes(), (std::vector<int64_t>{1, 64, 64}));
  namespace F = torch::nn::functional;
  const auto expect = F::interpolate(native.unsqueeze(0), F::InterpolateFuncOptions()
                                                              .size(std::vector<int64_t>{64, 64})
                                                              .mode(torch::kBilinear)
                                                              .align_corners(false))
                          .squeeze(0);
  EXPECT_TRUE(resized.allclose(expect, 1e-6, 1e-6));
  EXPECT_EQ(plain.size(1), 28);
  EXPECT_EQ(train_transform("cifar10", 48)(torch::zeros({3, 32, 32}, torch::kUInt8), rng).sizes(),
            (std::vector<int64_t>{3, 48, 48}));
  EXPECT_NE(error_of([] { then_resize(normalize({{0.0}, {1.0}}), 0); }).find("positive"), std::string::npos);
}
