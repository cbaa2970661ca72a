#pragma once
// Internal: the direct protobuf encoding of the few ONNX messages the exports need (ModelProto,
// GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto; field numbers from
// onnx/onnx.proto), so the library needs no protobuf dependency. Shared by the float export
// (onnx.cpp) and the QDQ export of a quantized network (onnx_qdq.cpp).
#include <cctype>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "rmnet/core.h"
#include "rmnet/ir/traits.h"

namespace rmnet::detail {

class Proto {
 public:
  std::string buf;
  void varint(uint64_t v) {
    while (v >= 0x80) {
      buf.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    buf.push_back(static_cast<char>(v));
  }
  void key(int field, int wire) { varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire)); }
  Proto& i64(int field, int64_t v) {
    key(field, 0);
    varint(static_cast<uint64_t>(v));
    return *this;
  }
  Proto& f32(int field, float v) {
    key(field, 5);
    char b[4];
    std::memcpy(b, &v, 4);
    buf.append(b, 4);
    return *this;
  }
  Proto& bytes(int field, const std::string& s) {
    key(field, 2);
    varint(s.size());
    buf += s;
    return *this;
  }
  Proto& msg(int field, const Proto& m) { return bytes(field, m.buf); }
};

// AttributeProto: name 1, f 2, i 3, ints 8, type 20 (FLOAT 1, INT 2, INTS 7)
inline Proto attr_int(const std::string& name, int64_t v) {
  Proto a;
  a.bytes(1, name).i64(3, v).i64(20, 2);
  return a;
}
inline Proto attr_float(const std::string& name, float v) {
  Proto a;
  a.bytes(1, name).f32(2, v).i64(20, 1);
  return a;
}
inline Proto attr_ints(const std::string& name, const std::vector<int64_t>& v) {
  Proto a;
  a.bytes(1, name);
  for (auto x : v) a.i64(8, x);
  a.i64(20, 7);
  return a;
}

// TensorProto: dims 1, data_type 2 (FLOAT = 1), name 8, raw_data 9
inline Proto tensor(const std::string& name, const torch::Tensor& t0) {
  const bool is_int = t0.scalar_type() == torch::kLong;  // INT64 = 7, else FLOAT = 1
  auto t = t0.detach().to(torch::kCPU, is_int ? torch::kLong : torch::kFloat).contiguous();
  Proto p;
  for (auto d : t.sizes()) p.i64(1, d);
  p.i64(2, is_int ? 7 : 1).bytes(8, name);
  p.bytes(9, std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
  return p;
}

// ValueInfoProto{name 1, type 2: TypeProto{tensor_type 1: {elem_type 1, shape 2: {dim 1: {dim_value 1 | dim_param 2}}}}}
inline Proto value_info(const std::string& name, const std::vector<std::string>& dims) {
  Proto shape;
  for (const auto& d : dims) {
    Proto dim;
    if (!d.empty() && std::isdigit(static_cast<unsigned char>(d[0])))
      dim.i64(1, std::stoll(d));
    else
      dim.bytes(2, d);
    shape.msg(1, dim);
  }
  Proto tt;
  tt.i64(1, 1).msg(2, shape);
  Proto type;
  type.msg(1, tt);
  Proto vi;
  vi.bytes(1, name).msg(2, type);
  return vi;
}

struct Graph {
  Proto g;
  int counter = 0;
  std::string node(const std::string& op, const std::vector<std::string>& inputs, const std::vector<Proto>& attrs,
                   const std::string& out_name = "") {
    const std::string out = out_name.empty() ? fmt::format("t{}", counter++) : out_name;
    Proto n;
    for (const auto& i : inputs) n.bytes(1, i);
    n.bytes(2, out).bytes(3, fmt::format("{}_{}", op, counter)).bytes(4, op);
    for (const auto& a : attrs) n.msg(5, a);
    g.msg(1, n);
    return out;
  }
  std::string init(const std::string& name, const torch::Tensor& t) {
    g.msg(5, tensor(name, t));
    return name;
  }
  /// The finished model (opset 13, IR 7, producer rmnet at its version): the graph with its
  /// input [N, in_channels, H, W] and output logits [N, num_classes].
  std::string model_bytes(int64_t in_channels, int64_t num_classes) {
    g.msg(11, value_info("input", {"N", std::to_string(in_channels), "H", "W"}));
    g.msg(12, value_info("logits", {"N", std::to_string(num_classes)}));
    Proto opset;
    opset.bytes(1, "").i64(2, 13);
    Proto model;
    model.i64(1, 7).bytes(2, "rmnet").bytes(3, version()).msg(8, opset).msg(7, g);
    return model.buf;
  }
};

/// The chain IR's ONNX sink (rmnet/ir/traits.h) on a Graph: initializers through `init_fn` when
/// set (the QDQ export keeps integer types), else Graph::init.
struct GraphSink : ir::OnnxSink {
  Graph& gr;
  std::function<std::string(const std::string&, const torch::Tensor&)> init_fn;
  explicit GraphSink(Graph& g, std::function<std::string(const std::string&, const torch::Tensor&)> f = {})
      : gr(g), init_fn(std::move(f)) {}
  std::string init(const std::string& name, const torch::Tensor& t) override {
    return init_fn ? init_fn(name, t) : gr.init(name, t);
  }
  std::string node(const std::string& op, const std::vector<std::string>& inputs, const std::vector<ir::OnnxAttr>& attrs,
                   const std::string& out = "") override {
    std::vector<Proto> protos;
    for (const auto& a : attrs) {
      if (a.type == ir::OnnxAttr::Type::Int) protos.push_back(attr_int(a.name, a.ints.at(0)));
      else if (a.type == ir::OnnxAttr::Type::Ints) protos.push_back(attr_ints(a.name, a.ints));
      else protos.push_back(attr_float(a.name, static_cast<float>(a.f)));
    }
    return gr.node(op, inputs, protos, out);
  }
};

}  // namespace rmnet::detail
