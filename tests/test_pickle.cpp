// rmnet's torch.save reader and writer (src/io/pickle.*): round trips, every opcode a state_dict
// uses, and hostile input — each bug the fuzzers found has its input here too (and in
// fuzz/regressions/), so the sanitizer build of this suite catches a reintroduced over-read.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "helpers.h"
#include "io/pickle.h"
#include "rmnet/core.h"
#include "rmnet/io/export.h"
#include "rmnet/io/model_file.h"
#include "rmnet/train/checkpoint.h"
#include "rmnet/io/state_dict.h"
#include "rmnet/version.h"

using namespace rmnet;
namespace fs = std::filesystem;

namespace {

std::string bytes_of(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

/// Unpickles `p` (held in a buffer of exactly its size, so an over-read is an ASan report) with a
/// loader of zero storages; returns the error message, or "" if it was read.
std::string unpickle_error(const std::string& p) {
  std::unique_ptr<char[]> exact(new char[p.size()]);
  std::memcpy(exact.get(), p.data(), p.size());
  try {
    rmnet::detail::unpickle_state_dict(std::string_view(exact.get(), p.size()),
                                [](const std::string&, torch::ScalarType t, int64_t n) {
                                  return torch::zeros({n}, torch::TensorOptions().dtype(t));
                                });
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST(Pickle, RoundTripOfEveryStorageType) {
  StateDict sd = {{"f", torch::randn({2, 3})},
                  {"d", torch::randn({4}, torch::kDouble)},
                  {"h", torch::randn({3}).to(torch::kHalf)},
                  {"bf", torch::randn({3}).to(torch::kBFloat16)},
                  {"l", torch::tensor({int64_t{1} << 40, int64_t{-5}})},
                  {"i", torch::tensor({7, -7}, torch::kInt)},
                  {"s", torch::tensor({3, -3}, torch::kShort)},
                  {"c", torch::tensor({-2, 2}, torch::kChar)},
                  {"u", torch::tensor({0, 255}, torch::kByte)},
                  {"b", torch::tensor({true, false})},
                  {"t", torch::randn({3, 2}).t()},  // non-contiguous: written contiguous
                  {"e", torch::empty({0, 4})}};
  const auto path = test::temp_path("all-types.pth");
  {
    std::ofstream(path, std::ios::binary) << rmnet::detail::write_state_dict_archive(sd);
  }
  const auto back = read_state_dict(path);
  ASSERT_EQ(back.size(), sd.size());
  for (size_t i = 0; i < sd.size(); ++i) {
    EXPECT_EQ(back[i].first, sd[i].first);
    EXPECT_EQ(back[i].second.scalar_type(), sd[i].second.scalar_type()) << sd[i].first;
    EXPECT_TRUE(torch::equal(back[i].second, sd[i].second.contiguous())) << sd[i].first;
  }
  fs::remove(path);
  EXPECT_THROW(rmnet::detail::storage_name(torch::kComplexFloat), c10::Error);
  EXPECT_EQ(rmnet::detail::storage_dtype(rmnet::detail::storage_name(torch::kBFloat16)), torch::kBFloat16);
}

TEST(Pickle, OpcodesTheWriterDoesNotUse) {
  // protocol 4 framing, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL, NEWOBJ, BININT1/2, LONG1, BINFLOAT,
  // TUPLE1/2, EMPTY_LIST + APPENDS, BINGET, BUILD: a 2x3 view of a 6-element storage
  std::string body;
  auto op = [&](std::initializer_list<int> b) { body += bytes_of(b); };
  auto sstr = [&](const std::string& s) {
    op({0x8c, static_cast<int>(s.size())});
    body += s;
    op({0x94});
  };
  sstr("collections");
  sstr("OrderedDict");
  op({0x93, 0x94, ')', 0x81, 0x94, '('});
  sstr("w");
  sstr("torch._utils");
  sstr("_rebuild_tensor_v2");
  op({0x93, '(', '('});
  sstr("storage");
  sstr("torch");
  sstr("FloatStorage");
  op({0x93});
  sstr("0");
  sstr("cpu");
  op({'K', 6, 't', 'Q', 'K', 0, 'K', 2, 'K', 3, 0x86, 'K', 3, 'K', 1, 0x86});
  op({0x89, ']', '(', 'G', 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x8a, 3, 0x01, 0x00, 0x80, 'M', 0x34, 0x12, 'e'});
  op({'h', 1, 0x85, 't', 'R', 'u', '}', 'b', '.'});
  std::string p = bytes_of({0x80, 4, 0x95});
  for (int k = 0; k < 8; ++k) p.push_back(static_cast<char>(body.size() >> (8 * k)));
  p += body;
  StateDict sd;
  ASSERT_NO_THROW(sd = rmnet::detail::unpickle_state_dict(p, [](const std::string& key, torch::ScalarType t, int64_t n) {
    EXPECT_EQ(key, "0");
    return torch::arange(n, torch::TensorOptions().dtype(t));
  }));
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd[0].first, "w");
  EXPECT_TRUE(torch::equal(sd[0].second, torch::arange(6, torch::kFloat).view({2, 3})));
}

TEST(Pickle, TruncatedOpcodesAreErrorsNotOverReads) {
  // each was an out-of-bounds read before: LONG1 indexed the data before checking its length,
  // BINFLOAT read 8 bytes before checking, BINUNICODE8's length overflowed the position
  EXPECT_NE(unpickle_error(bytes_of({0x80, 2, 0x8a, 8, 1})).find("truncated pickle"), std::string::npos);
  EXPECT_NE(unpickle_error(bytes_of({0x80, 2, 0x8a, 4})).find("truncated pickle"), std::string::npos);
  EXPECT_NE(unpickle_error(bytes_of({0x80, 2, 'G', 0x3f, 0xf0})).find("truncated pickle"), std::string::npos);
  EXPECT_NE(unpickle_error(bytes_of({0x80, 4, 0x8d, 255, 255, 255, 255, 255, 255, 255, 255, 'a', 'b'}))
                .find("truncated pickle"),
            std::string::npos);
  EXPECT_NE(unpickle_error(bytes_of({0x80, 2, 0x8a, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1, '.'})).find("9 bytes"),
            std::string::npos);
  // a list appended to itself (a leaked reference cycle before), SETITEM on an int
  EXPECT_NE(unpickle_error(bytes_of({0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'})).find("not a state_dict"),
            std::string::npos);
  EXPECT_NE(unpickle_error(bytes_of({0x80, 2, 'K', 1, 'K', 2, 'K', 3, 's', '.'})).find("non-dict"),
            std::string::npos);
}

TEST(Pickle, PicklesForLibTorchAreWalkedFirst) {
  // LibTorch's unpickler reserved what these claimed (found by fuzz_model_file / fuzz_checkpoint)
  const auto err = [](const std::string& p) { return test::error_of([&] { rmnet::detail::check_pickle_for_libtorch(p, "x.pkl"); }); };
  EXPECT_NE(err(bytes_of({0x80, 2, 'N', 'r', 0xff, 0xff, 0xff, 0x7f, '.'})).find("memo index 2147483647"),
            std::string::npos);  // LONG_BINPUT far beyond the memo
  EXPECT_NE(err(bytes_of({0x80, 2, 'X', 0xff, 0xff, 0xff, 0x0f, 'a', '.'})).find("runs past the end"),
            std::string::npos);  // BINUNICODE of 268 MB in a 9-byte pickle
  EXPECT_NE(err(bytes_of({0x80, 2, 0x8e, 1, 0, 0, 0, 0, 0, 0, 1, 'a', '.'})).find("runs past the end"),
            std::string::npos);  // BINBYTES8
  EXPECT_NE(err(bytes_of({0x80, 2, 'N'})).find("no STOP"), std::string::npos);
  EXPECT_NE(err(bytes_of({0x80, 2, 0xff, '.'})).find("unknown opcode 255"), std::string::npos);
  EXPECT_NE(err(bytes_of({0x80, 2, 'c', 'a', '.'})).find("unterminated"), std::string::npos);
  EXPECT_NE(err(bytes_of({0x80, 2, 'N', 'q', 0, 'N', 'q', 2, '.'})).find("x.pkl"), std::string::npos);
  // what pickle writers emit passes: memo ids in order, reuse of an id, strings, a global, a frame
  EXPECT_NO_THROW(rmnet::detail::check_pickle_for_libtorch(
      bytes_of({0x80, 2, '}', 'q', 0, 'X', 1, 0, 0, 0, 'k', 'q', 1, 0x8c, 1, 'v', 'q', 1, 's', 'c', 'm', '\n', 'n', '\n',
                'q', 2, 'h', 0, '.'}),
      "ok.pkl"));
  EXPECT_NO_THROW(rmnet::detail::check_pickle_for_libtorch(bytes_of({0x80, 4, 0x95, 3, 0, 0, 0, 0, 0, 0, 0, 'N', 0x94, '.'}), "ok.pkl"));
  // and every real archive this project writes passes (its pickles go through the walk on load)
  auto net = test::random_model("resnet8");
  const auto path = test::temp_path("walked.rmnet");
  save_model(*net, path);
  EXPECT_NO_THROW(load_model(path));
  std::filesystem::remove(path);
}

TEST(Pickle, EveryRegressionInputIsAClearError) {
  // fuzz/regressions: all pickles and archives the fuzzers (or review) found
  const fs::path dir = fs::path(RMNET_TEST_SOURCE_DIR) / ".." / "fuzz" / "regressions";
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir / "pickle")) {
    const auto msg = unpickle_error(read_file(e.path()));
    EXPECT_FALSE(msg.empty()) << e.path();
    ++n;
  }
  for (const auto& e : fs::directory_iterator(dir / "state_dict")) {
    const auto msg = test::error_of([&] { read_state_dict(e.path().string()); });
    EXPECT_NE(msg.find(e.path().string()), std::string::npos) << msg;
    ++n;
  }
  for (const auto& e : fs::directory_iterator(dir / "model_file")) {
    const auto msg = test::error_of([&] { load_model(e.path().string()); });
    EXPECT_NE(msg.find(e.path().string()), std::string::npos) << msg;
    ++n;
  }
  for (const auto& e : fs::directory_iterator(dir / "checkpoint")) {
    const auto msg = test::error_of([&] { load_checkpoint(e.path().string()); });
    EXPECT_NE(msg.find(e.path().string()), std::string::npos) << msg;
    ++n;
  }
  for (const auto& e : fs::directory_iterator(dir / "chain_json")) {
    const auto msg = test::error_of([&] { plain_from_chain_json(read_file(e.path()), "chain.json"); });
    EXPECT_NE(msg.find("chain.json"), std::string::npos) << msg;
    ++n;
  }
  EXPECT_GE(n, 15);
}

// LibTorch's archive reader fills a storage of the stated numel from its data record whatever the
// record's size; a checkpoint whose record is shorter (found by fuzz_checkpoint: a 5,734-byte model
// blob over an 8-byte record) is refused before LibTorch reads it, naming the record.
TEST(Pickle, ShortStorageRecordsAreRefused) {
  const fs::path f = fs::path(RMNET_TEST_SOURCE_DIR) / ".." / "fuzz" / "regressions" / "checkpoint" /
                     "short_storage_record.ckpt";
  const auto msg = test::error_of([&] { load_checkpoint(f.string()); });
  EXPECT_NE(msg.find("storage record"), std::string::npos) << msg;
  EXPECT_NE(msg.find("elements of 1 bytes stated"), std::string::npos) << msg;
}

TEST(Pickle, ViewsOutsideTheirStorageAreRefused) {
  const fs::path dir = fs::path(RMNET_TEST_SOURCE_DIR) / ".." / "fuzz" / "regressions";
  EXPECT_NE(unpickle_error(read_file(dir / "pickle" / "view-past-storage")).find("exceeds its storage of 2"),
            std::string::npos);
  const auto msg = test::error_of([&] { read_state_dict((dir / "state_dict" / "short-storage.pth").string()); });
  EXPECT_NE(msg.find("has 8 bytes, 4 elements of 4 bytes expected"), std::string::npos) << msg;
}

TEST(Pickle, PthExportReadsBackAsANetwork) {
  auto r = convert(*test::random_model("mobilenet_v2_cifar"), ConvertOptions().keep_bn(true));
  const auto path = test::temp_path("net.pth");
  export_pth(*r.plain, path);
  auto net = import_pth(path);
  EXPECT_EQ(net->specs(), r.plain->specs());
  auto x = torch::randn({2, 3, 32, 32});
  EXPECT_EQ(test::rel_diff(*r.plain, *net, x), 0.0);
  fs::remove(path);
  fs::remove(path + ".json");
}

TEST(Pickle, LoadStateDictNamesTheTensor) {
  auto m = test::random_model("resnet20");
  StateDict sd;
  for (const auto& p : m->named_parameters()) sd.emplace_back(p.key(), p.value());
  for (const auto& b : m->named_buffers()) sd.emplace_back(b.key(), b.value());
  auto copy = test::random_model("resnet20", torch::kFloat, true, 10, true, 7);
  load_state_dict(*copy, sd, "src");
  auto x = torch::randn({2, 3, 32, 32});
  EXPECT_EQ(test::rel_diff(*m, *copy, x), 0.0);
  sd.push_back(sd.front());
  EXPECT_NE(test::error_of([&] { load_state_dict(*copy, sd, "src"); }).find("src: tensor 'conv1.weight' appears twice"),
            std::string::npos);
  sd.pop_back();
  sd.erase(sd.begin());
  EXPECT_NE(test::error_of([&] { load_state_dict(*copy, sd, "src"); }).find("src: missing tensor 'conv1.weight'"),
            std::string::npos);
}

TEST(Version, OneNumber) { EXPECT_EQ(version(), RMNET_VERSION); }
