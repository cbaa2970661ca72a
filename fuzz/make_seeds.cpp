// Writes the seed corpus of every fuzz target: small valid files made by rmnet's own writers (and
// hand-written pickles for the opcodes those writers do not use). Run by the build:
//   make_seeds OUT_DIR   ->  OUT_DIR/<target>/<name>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>
#include <zlib.h>

#include "io/pickle.h"
#include "rmnet/io/export.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/plain.h"
#include "rmnet/train/checkpoint.h"

namespace fs = std::filesystem;
using namespace rmnet;

namespace {

fs::path root;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(root / target);
  std::ofstream(root / target / name, std::ios::binary) << bytes;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::shared_ptr<PlainNetImpl> tiny_net() {
  std::vector<LayerSpec> layers = {LayerSpec::conv(1, 2, 3, 1, 1),     LayerSpec::batchnorm(2), LayerSpec::clamp(2),
                                   LayerSpec::prelu(2),                LayerSpec::se(2, 1, 1),  LayerSpec::maxpool(2, 2, 0),
                                   LayerSpec::avgpool(),               LayerSpec::flatten(),    LayerSpec::linear(2, 3)};
  ModelOptions o("plain");
  o.in_channels(1).num_classes(3);
  auto net = std::make_shared<PlainNetImpl>(layers, o);
  net->eval();
  return net;
}

StateDict state_of(const torch::nn::Module& m) {
  StateDict sd;
  for (const auto& p : m.named_parameters(true)) sd.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers(true)) sd.emplace_back(b.key(), b.value());
  return sd;
}

std::string gzip(const std::string& raw) {
  z_stream z{};
  deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
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

std::string be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

/// A pickle using the opcodes rmnet's writer does not (protocol 4 framing, MEMOIZE, SHORT_BINUNICODE,
/// STACK_GLOBAL, BININT1/2, LONG1, BINFLOAT, TUPLE1..3, EMPTY_LIST/APPENDS, BINGET, NEWOBJ, BUILD).
std::string rich_pickle() {
  std::string p = "\x80\x04\x95";
  std::string body;
  auto op = [&](std::initializer_list<int> bytes) {
    for (int b : bytes) body.push_back(static_cast<char>(b));
  };
  auto sstr = [&](const std::string& s) {
    op({0x8c, static_cast<int>(s.size())});
    body += s;
    op({0x94});  // MEMOIZE
  };
  sstr("collections");
  sstr("OrderedDict");
  op({0x93, 0x94, ')', 0x81, 0x94});  // OrderedDict() via NEWOBJ
  op({'('});
  sstr("w");
  sstr("torch._utils");
  sstr("_rebuild_tensor_v2");
  op({0x93, '(', '('});  // the call's arguments, then the persistent id
  sstr("storage");
  sstr("torch");
  sstr("FloatStorage");
  op({0x93});
  sstr("0");
  sstr("cpu");
  op({'K', 6, 't', 'Q'});              // ('storage', FloatStorage, '0', 'cpu', 6) BINPERSID
  op({'K', 0, 'K', 2, 'K', 3, 0x86});  // offset 0, sizes (2, 3)
  op({'K', 3, 'K', 1, 0x86});          // strides (3, 1)
  op({0x89, ']', '(', 'G', 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x8a, 3, 0x01, 0x00, 0x80, 'M', 0x34, 0x12, 'e'});
  op({'h', 1, 0x85, 't', 'R'});  // extra args: a list [1.0, LONG1 -8388607, 0x1234] and a memo get
  op({'u', '}', 'b', '.'});
  for (int k = 0; k < 8; ++k) p.push_back(static_cast<char>(static_cast<uint64_t>(body.size()) >> (8 * k)));
  return p + body;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds OUT_DIR\n";
    return 2;
  }
  root = argv[1];
  torch::manual_seed(0);
  auto net = tiny_net();
  const auto sd = state_of(*net);

  // pickle and state_dict (zip): rmnet's writer, a double-precision and integer state, a rich pickle
  put("pickle", "plain.pkl", rmnet::detail::pickle_state_dict(sd).pickle);
  put("pickle", "rich.pkl", rich_pickle());
  put("state_dict", "plain.pth", rmnet::detail::write_state_dict_archive(sd));
  put("state_dict", "mixed.pth",
      rmnet::detail::write_state_dict_archive({{"a", torch::arange(6, torch::kDouble).view({2, 3})},
                                        {"b", torch::tensor({int64_t{1} << 40, int64_t{-3}})},
                                        {"c", torch::ones({2}, torch::kHalf)}}));

  // model file and checkpoint
  put("model_file", "plain.rmnet", serialize_model(*net));
  const auto tmp = root / "tmp";
  fs::create_directories(tmp);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  save_checkpoint((tmp / "c.ckpt").string(), *net, opt, TrainState(), 0.5, "{\"arch\": \"plain\"}");
  put("checkpoint", "plain.ckpt", slurp(tmp / "c.ckpt"));

  // chain JSON (the .pth export's description)
  put("chain_json", "plain.json", chain_json(*net));

  // IDX: first byte = mode (bit 0 labels, bit 1 gzip by the harness, bit 2 gzip data as it is)
  std::string images = be32(0x803) + be32(2) + be32(3) + be32(2) + std::string(12, '\x7f');
  std::string labels = be32(0x801) + be32(2) + std::string("\x01\x09", 2);
  put("idx", "images", "\x00" + images);
  put("idx", "labels", "\x01" + labels);
  put("idx", "images-gz", "\x02" + images);
  put("idx", "labels-gz-file", "\x05" + gzip(labels));

  // CIFAR: first byte 0 = CIFAR-10 records, 1 = CIFAR-100
  put("cifar", "cifar10", std::string("\x00", 1) + "\x03" + std::string(3072, '\x20'));
  put("cifar", "cifar100", std::string("\x01", 1) + "\x01\x42" + std::string(3072, '\x20'));

  // images: PNG, JPEG, BMP (first byte 0 = colour, 1 = gray)
  cv::Mat img(6, 5, CV_8UC3, cv::Scalar(10, 200, 30));
  for (const auto& [ext, name] : {std::pair{".png", "png"}, {".jpg", "jpg"}, {".bmp", "bmp"}}) {
    std::vector<uchar> buf;
    cv::imencode(ext, img, buf);
    put("image", name, std::string(1, name[0] == 'b' ? '\x01' : '\x00') + std::string(buf.begin(), buf.end()));
  }

  // TOML config (configs/*.toml shape)
  put("config", "train.toml",
      "# comment\nthreads = 1\n[train]\narch = \"resnet18_cifar\"\ndataset = \"cifar10\"\nepochs = 2\n"
      "batch-size = 8\nlr = 0.1\nweight-decay = 5e-4\nmilestones = [1, 2]\namp = true\n"
      "[convert]\npointwise-fusion = \"auto\"\ntolerance = 1e-4\nkeep-bn = false\n");
  fs::remove_all(tmp);
  std::cout << "seeds written to " << root << "\n";
  return 0;
}
