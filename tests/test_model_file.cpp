// Model files: self-describing round trips, and clear errors for bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "helpers.h"
#include "rmnet/core.h"
#include "rmnet/data/preprocess.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/plain.h"

using namespace rmnet;
using rmnet::test::error_of;
namespace fs = std::filesystem;

namespace {

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void expect_same_outputs(ModelImpl& a, ModelImpl& b, const torch::Tensor& x) {
  torch::NoGradGuard g;
  a.eval();
  b.eval();
  EXPECT_TRUE(torch::equal(a.forward(x), b.forward(x)));
}

}  // namespace

TEST(ModelFile, RoundTripsEveryFamily) {
  for (const std::string arch : {"resnet20", "resnet50", "mobilenet_v2_cifar"}) {
    auto m = test::random_model(arch);
    const auto path = test::temp_path(arch + ".rmnet");
    save_model(*m, path);
    auto loaded = load_model(path);
    EXPECT_EQ(loaded->family(), m->family());
    EXPECT_EQ(loaded->options().arch(), arch);
    EXPECT_TRUE(loaded->options().track_block_stats());
    expect_same_outputs(*m, *loaded, torch::randn({2, 3, 32, 32}));
    fs::remove(path);
  }
}

TEST(ModelFile, RoundTripsPlainNetworksWithMetadataAndDtype) {
  auto m = test::random_model("resnet20", torch::kDouble);
  auto r = convert(*m, ConvertOptions().keep_bn(true));
  const auto path = test::temp_path("plain.rmnet");
  save_model(*r.plain, path);
  auto loaded = load_model(path);
  auto* plain = dynamic_cast<PlainNetImpl*>(loaded.get());
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(plain->specs(), r.plain->specs());
  EXPECT_EQ(plain->metadata().at("source_arch"), "resnet20");
  EXPECT_EQ(plain->metadata().at("bn"), "kept");
  EXPECT_EQ(plain->parameters().front().scalar_type(), torch::kDouble);
  expect_same_outputs(*r.plain, *loaded, torch::randn({2, 3, 32, 32}, torch::kDouble));
  fs::remove(path);
}

TEST(ModelFile, MissingFileNamesTheFile) {
  const auto path = test::temp_path("does-not-exist.rmnet");
  auto msg = error_of([&] { load_model(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
}

TEST(ModelFile, RejectsFilesThatAreNotModels) {
  const auto path = test::temp_path("garbage.rmnet");
  write_bytes(path, "this is not a model\n");
  auto msg = error_of([&] { load_model(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an rmnet model file"), std::string::npos) << msg;

  // a torch archive holding a bare tensor
  auto bytes = torch::pickle_save(torch::ones({2}));
  write_bytes(path, std::string(bytes.begin(), bytes.end()));
  msg = error_of([&] { load_model(path); });
  EXPECT_NE(msg.find("not an rmnet model file"), std::string::npos) << msg;

  // an empty file
  write_bytes(path, "");
  msg = error_of([&] { load_model(path); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  fs::remove(path);
}

TEST(ModelFile, BadTypeTagIsAClearError) {
  // A type string LibTorch's parser rejects (found by fuzz_model_file): the parser throws a
  // torch::jit::ErrorReport, which the reader turns into its one error type, naming the file.
  auto m = test::random_model("resnet8");
  const auto path = test::temp_path("typetag.rmnet");
  save_model(*m, path);
  auto bytes = read_bytes(path);
  const std::string tag = "Dict[str, Tensor]";
  const auto at = bytes.find(tag);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, tag.size(), "Dict[str, Te0sor]");
  write_bytes(path, bytes);
  std::string msg;
  try {
    load_model(path);
  } catch (const c10::Error& e) {
    msg = e.what_without_backtrace();
  }  // any other exception type fails the test
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("Te0sor"), std::string::npos) << msg;
  EXPECT_THROW(deserialize_model(bytes, "bytes"), c10::Error);
  fs::remove(path);
}

TEST(ModelFile, RejectsTruncatedFiles) {
  auto m = test::random_model("resnet20");
  const auto path = test::temp_path("trunc.rmnet");
  save_model(*m, path);
  auto bytes = read_bytes(path);
  write_bytes(path, bytes.substr(0, bytes.size() / 2));
  auto msg = error_of([&] { load_model(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_FALSE(msg.empty());
  fs::remove(path);
}

namespace {
/// Writes a model file whose header and state are given explicitly.
void write_model_file(const std::string& path, const std::string& header,
                      const c10::Dict<std::string, at::Tensor>& state) {
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("rmnet", header);
  root.insert("state", state);
  auto bytes = torch::pickle_save(root);
  write_bytes(path, std::string(bytes.begin(), bytes.end()));
}
}  // namespace

TEST(ModelFile, UnknownArchitectureAndShapeMismatchAreNamed) {
  const auto path = test::temp_path("bad-header.rmnet");
  write_model_file(path,
                   R"({"format":"rmnet-model","version":1,"family":"resnet","options":{"arch":"resnet9000"}})",
                   c10::Dict<std::string, at::Tensor>());
  auto msg = error_of([&] { load_model(path); });
  EXPECT_NE(msg.find("unknown architecture 'resnet9000'"), std::string::npos) << msg;

  // a resnet20 file whose fc has 5 classes while the header says 10
  auto m = test::random_model("resnet20", torch::kFloat, false, 5);
  c10::Dict<std::string, at::Tensor> state;
  for (const auto& p : m->named_parameters()) state.insert(p.key(), p.value());
  for (const auto& b : m->named_buffers()) state.insert(b.key(), b.value());
  write_model_file(
      path,
      R"({"format":"rmnet-model","version":1,"family":"resnet","options":{"arch":"resnet20","num_classes":10}})",
      state);
  msg = error_of([&] { load_model(path); });
  EXPECT_NE(msg.find("fc.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[5, 64]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[10, 64]"), std::string::npos) << msg;

  // a missing tensor and an unexpected one
  state.erase("fc.bias");
  write_model_file(
      path,
      R"({"format":"rmnet-model","version":1,"family":"resnet","options":{"arch":"resnet20","num_classes":5}})",
      state);
  msg = error_of([&] { load_model(path); });
  EXPECT_NE(msg.find("missing tensor 'fc.bias'"), std::string::npos) << msg;
  state.insert("fc.bias", torch::zeros({5}));
  state.insert("extra.weight", torch::zeros({1}));
  write_model_file(
      path,
      R"({"format":"rmnet-model","version":1,"family":"resnet","options":{"arch":"resnet20","num_classes":5}})",
      state);
  msg = error_of([&] { load_model(path); });
  EXPECT_NE(msg.find("unexpected tensor 'extra.weight'"), std::string::npos) << msg;
  fs::remove(path);
}

TEST(ModelFile, FailedWriteLeavesNothingBehind) {
  auto m = test::random_model("resnet20");
  const auto dir = test::temp_path("no-such-dir");
  auto msg = error_of([&] { save_model(*m, dir + "/model.rmnet"); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir));

  // Saving over an existing file replaces it atomically; no temporary file stays around.
  const auto path = test::temp_path("atomic.rmnet");
  write_bytes(path, "old");
  save_model(*m, path);
  EXPECT_NE(read_bytes(path), "old");
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path()))
    EXPECT_EQ(e.path().string().find(path + ".tmp"), std::string::npos);
  fs::remove(path);
}

// Integer metadata (input sizes, the preprocessing crop) is read with metadata_int: a value that is
// not a whole integer is an error naming the key, never a silent 0 or a partial parse ("32px").
TEST(ModelFile, IntegerMetadataIsCheckedAndNamed) {
  auto model = rmnet::test::plain_bn_of("resnet8", torch::kFloat).ptr();  // a plain network reads its input size from metadata
  model->metadata().erase("verify_input_size");
  model->metadata().erase("input_size");
  EXPECT_EQ(rmnet::metadata_int(model->metadata(), "input_size"), std::nullopt);
  model->metadata()["input_size"] = "48";
  EXPECT_EQ(model->input_size(), 48);
  for (const std::string bad : {"32px", "", "1e3", "abc", "99999999999999999999"}) {
    model->metadata()["input_size"] = bad;
    try {
      model->input_size();
      ADD_FAILURE() << "accepted input_size '" << bad << "'";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find("metadata 'input_size' is not an integer"), std::string::npos) << e.what();
    }
  }
  std::map<std::string, std::string> m{{"preprocess.crop", "28"}, {"preprocess.resize", "x"}};
  EXPECT_THROW(rmnet::Preprocess::from_metadata(m), c10::Error);
  m["preprocess.resize"] = "-4";
  EXPECT_THROW(rmnet::Preprocess::from_metadata(m), c10::Error);
  m["preprocess.resize"] = "32";
  const auto p = rmnet::Preprocess::from_metadata(m);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->crop, 28);
  EXPECT_EQ(p->resize, 32);
}
