#include "rmnet/io/export.h"

#include <cmath>
#include <sstream>

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "rmnet/io/model_file.h"
#include "layer_json.h"

namespace rmnet {
namespace {

std::string pair(int64_t v) { return fmt::format("[{}, {}]", v, v); }

/// A float literal for TorchScript source (exact: 17 significant digits).
std::string scalar(double v) {
  if (std::isinf(v)) return v > 0 ? "float('inf')" : "float('-inf')";
  return fmt::format("{:.17g}", v) + (std::floor(v) == v && std::abs(v) < 1e15 ? ".0" : "");
}

/// Writes a protocol-2 pickle of an OrderedDict of tensors, the way torch.save does, with the
/// storages as separate records.
class StateDictPickler {
 public:
  std::string out;
  std::vector<torch::Tensor> storages;

  void write(const std::vector<std::pair<std::string, torch::Tensor>>& items) {
    op(0x80);
    op(2);
    global("collections", "OrderedDict");
    op(')');
    op('R');
    op('(');
    for (const auto& [k, t] : items) {
      unicode(k);
      tensor(t);
    }
    op('u');
    op('.');
  }

 private:
  void op(uint8_t b) { out.push_back(static_cast<char>(b)); }
  void le32(uint32_t v) {
    for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(v >> (8 * k)));
  }
  void global(const std::string& mod, const std::string& name) {
    op('c');
    out += mod + "\n" + name + "\n";
  }
  void unicode(const std::string& s) {
    op('X');
    le32(static_cast<uint32_t>(s.size()));
    out += s;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      le32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      op(0x8a);
      op(8);
      for (int k = 0; k < 8; ++k) op(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * k)));
    }
  }
  void int_tuple(c10::IntArrayRef v) {
    op('(');
    for (auto x : v) integer(x);
    op('t');
  }
  static const char* storage_name(torch::ScalarType t) {
    switch (t) {
      case torch::kFloat: return "FloatStorage";
      case torch::kDouble: return "DoubleStorage";
      case torch::kHalf: return "HalfStorage";
      case torch::kBFloat16: return "BFloat16Storage";
      case torch::kLong: return "LongStorage";
      case torch::kInt: return "IntStorage";
      case torch::kByte: return "ByteStorage";
      case torch::kBool: return "BoolStorage";
      default: TORCH_CHECK(false, "cannot export tensors of type ", t);
    }
  }
  void tensor(const torch::Tensor& t0) {
    auto t = t0.detach().cpu().contiguous();
    const auto key = std::to_string(storages.size());
    storages.push_back(t);
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');  // persistent id: ('storage', torch.XStorage, key, 'cpu', numel)
    unicode("storage");
    global("torch", storage_name(t.scalar_type()));
    unicode(key);
    unicode("cpu");
    integer(t.numel());
    op('t');
    op('Q');
    integer(0);
    int_tuple(t.sizes());
    int_tuple(t.strides());
    op(0x89);  // requires_grad False
    global("collections", "OrderedDict");
    op(')');
    op('R');
    op('t');
    op('R');
  }
};

}  // namespace

torch::jit::Module to_torchscript(const PlainNetImpl& net) {
  torch::jit::Module m("__torch__.rmnet.PlainNet");
  std::ostringstream src;
  src << "def forward(self, x):\n";
  auto reg = [&](const std::string& name, const torch::Tensor& t, bool param) {
    if (param)
      m.register_parameter(name, t.detach().clone(), false);
    else
      m.register_buffer(name, t.detach().clone());
  };
  for (size_t i = 0; i < net.size(); ++i) {
    const auto& s = net.spec(i);
    const std::string p = "l" + std::to_string(i) + "_";
    switch (s.kind) {
      case LayerKind::Conv: {
        auto c = net.layer_as<torch::nn::Conv2dImpl>(i);
        reg(p + "weight", c->weight, true);
        if (s.bias) reg(p + "bias", c->bias, true);
        src << fmt::format("    x = torch.conv2d(x, self.{0}weight, {1}, {2}, {3}, [1, 1], {4})\n", p,
                           s.bias ? "self." + p + "bias" : "None", pair(s.stride), pair(s.padding), s.groups);
        break;
      }
      case LayerKind::BatchNorm: {
        auto b = net.layer_as<torch::nn::BatchNorm2dImpl>(i);
        reg(p + "weight", b->weight, true);
        reg(p + "bias", b->bias, true);
        reg(p + "running_mean", b->running_mean, false);
        reg(p + "running_var", b->running_var, false);
        src << fmt::format(
            "    x = torch.batch_norm(x, self.{0}weight, self.{0}bias, self.{0}running_mean, self.{0}running_var, "
            "False, 0.0, {1}, True)\n",
            p, s.eps);
        break;
      }
      case LayerKind::ReLU:
        src << "    x = torch.relu(x)\n";
        break;
      case LayerKind::PReLU:
        reg(p + "weight", net.layer_as<torch::nn::PReLUImpl>(i)->weight, true);
        src << fmt::format("    x = torch.prelu(x, self.{}weight)\n", p);
        break;
      case LayerKind::Clamp: {
        // Uniform bounds (ReLU6) as a scalar clamp, which freezing fuses into the conv; mixed bounds
        // (reserved channels unclipped) as maximum/minimum with broadcast bounds (optimize_for_inference
        // takes clamp bounds as scalars only).
        auto c = net.layer_as<ChannelClampImpl>(i);
        const auto lo = c->min.to(torch::kDouble), hi = c->max.to(torch::kDouble);
        const double lo0 = lo[0].item<double>(), hi0 = hi[0].item<double>();
        if (lo.eq(lo0).all().item<bool>() && hi.eq(hi0).all().item<bool>()) {
          if (std::isinf(lo0) && lo0 < 0 && std::isinf(hi0) && hi0 > 0) break;  // identity
          src << fmt::format("    x = torch.clamp(x, {}, {})\n", std::isinf(lo0) ? "None" : scalar(lo0),
                             std::isinf(hi0) ? "None" : scalar(hi0));
        } else {
          reg(p + "min", c->min.view({1, -1, 1, 1}), false);
          reg(p + "max", c->max.view({1, -1, 1, 1}), false);
          src << fmt::format("    x = torch.minimum(torch.maximum(x, self.{0}min), self.{0}max)\n", p);
        }
        break;
      }
      case LayerKind::MaxPool:
        src << fmt::format("    x = torch.max_pool2d(x, {}, {}, {}, [1, 1], False)\n", pair(s.kernel), pair(s.stride),
                           pair(s.padding));
        break;
      case LayerKind::AvgPool:
        src << "    x = torch.adaptive_avg_pool2d(x, [1, 1])\n";
        break;
      case LayerKind::Flatten:
        src << "    x = torch.flatten(x, 1)\n";
        break;
      case LayerKind::Linear: {
        auto l = net.layer_as<torch::nn::LinearImpl>(i);
        reg(p + "weight", l->weight, true);
        if (s.bias) reg(p + "bias", l->bias, true);
        src << fmt::format("    x = torch.linear(x, self.{}weight, {})\n", p, s.bias ? "self." + p + "bias" : "None");
        break;
      }
      case LayerKind::SE: {
        auto e = net.layer_as<ChannelSEImpl>(i);
        for (const auto& [n, t] : {std::pair{"w1", e->w1}, {"b1", e->b1}, {"w2", e->w2}, {"b2", e->b2}})
          reg(p + n, t, true);
        src << fmt::format("    a = torch.narrow(x, 1, 0, {})\n", s.scaled);
        src << fmt::format(
            "    g = torch.sigmoid(torch.linear(torch.relu(torch.linear(torch.mean(a, [2, 3]), self.{0}w1, self.{0}b1)), "
            "self.{0}w2, self.{0}b2))\n",
            p);
        if (s.scaled == s.out_channels)
          src << "    x = a * g.unsqueeze(2).unsqueeze(3)\n";
        else
          src << fmt::format("    x = torch.cat([a * g.unsqueeze(2).unsqueeze(3), torch.narrow(x, 1, {}, {})], 1)\n",
                             s.scaled, s.out_channels - s.scaled);
        break;
      }
    }
  }
  src << "    return x\n";
  m.define(src.str());
  m.eval();
  return m;
}

void export_torchscript(const PlainNetImpl& net, const std::string& path) {
  auto m = to_torchscript(net);
  std::ostringstream os;
  m.save(os);
  write_file_atomic(path, os.str());
}

std::string chain_json(const PlainNetImpl& net) {
  nlohmann::json j = {{"format", "rmnet-chain"},
                      {"version", 1},
                      {"in_channels", net.options().in_channels()},
                      {"num_classes", net.options().num_classes()},
                      {"layers", nlohmann::json::array()}};
  for (const auto& s : net.specs()) j["layers"].push_back(detail::layer_to_json(s));
  return j.dump(2) + "\n";
}

void export_pth(const PlainNetImpl& net, const std::string& path) {
  std::vector<std::pair<std::string, torch::Tensor>> items;
  for (const auto& p : net.named_parameters(true)) items.emplace_back(p.key(), p.value());
  for (const auto& b : net.named_buffers(true)) items.emplace_back(b.key(), b.value());
  // Sequential order: by layer index, then the module's own order
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    return std::stoll(a.first.substr(0, a.first.find('.'))) < std::stoll(b.first.substr(0, b.first.find('.')));
  });
  StateDictPickler pk;
  pk.write(items);
  std::string bytes;
  {
    caffe2::serialize::PyTorchStreamWriter w([&](const void* d, size_t n) {
      bytes.append(static_cast<const char*>(d), n);
      return n;
    });
    w.writeRecord("data.pkl", pk.out.data(), pk.out.size());
    w.writeRecord("byteorder", "little", 6);
    for (size_t i = 0; i < pk.storages.size(); ++i) {
      const auto& t = pk.storages[i];
      w.writeRecord("data/" + std::to_string(i), t.data_ptr(), t.numel() * t.element_size());
    }
    w.writeEndOfFile();
  }
  write_file_atomic(path, bytes);
  write_file_atomic(path + ".json", chain_json(net));
}

}  // namespace rmnet
