#include "rmnet/io/torchvision.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <variant>

#include <caffe2/serialize/inline_container.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "rmnet/data/preprocess.h"
#include "rmnet/models/registry.h"

namespace rmnet {
namespace {

// ---- a minimal pickle reader (protocol <= 4 opcodes a state_dict uses) -------------------------

struct PObj;
using PPtr = std::shared_ptr<PObj>;
struct PObj {
  enum Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Tensor, Storage, Mark } kind = None;
  int64_t i = 0;
  double f = 0;
  std::string s, s2;               // String; Global module/name
  std::vector<PPtr> items;         // Tuple, List
  std::vector<std::pair<PPtr, PPtr>> dict;
  torch::Tensor tensor;            // Tensor, Storage (1-D, whole storage)
};
PPtr make(PObj::Kind k) {
  auto p = std::make_shared<PObj>();
  p->kind = k;
  return p;
}

torch::ScalarType storage_dtype(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> m = {
      {"FloatStorage", torch::kFloat},   {"DoubleStorage", torch::kDouble}, {"HalfStorage", torch::kHalf},
      {"BFloat16Storage", torch::kBFloat16}, {"LongStorage", torch::kLong}, {"IntStorage", torch::kInt},
      {"ShortStorage", torch::kShort},   {"CharStorage", torch::kChar},     {"ByteStorage", torch::kByte},
      {"BoolStorage", torch::kBool}};
  auto it = m.find(name);
  TORCH_CHECK(it != m.end(), "unsupported storage type torch.", name);
  return it->second;
}

class Unpickler {
 public:
  Unpickler(const std::string& data, caffe2::serialize::PyTorchStreamReader& zip) : d_(data), zip_(zip) {}

  PPtr run() {
    while (true) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;              // PROTO
        case 0x95: skip(8); break;           // FRAME
        case '.': return pop();              // STOP
        case '(': stack_.push_back(make(PObj::Mark)); break;
        case 'N': stack_.push_back(make(PObj::None)); break;
        case 0x88: case 0x89: {              // NEWTRUE / NEWFALSE
          auto p = make(PObj::Bool);
          p->i = op == 0x88;
          stack_.push_back(p);
          break;
        }
        case 'K': push_int(u8()); break;     // BININT1
        case 'M': push_int(le(2)); break;    // BININT2
        case 'J': push_int(static_cast<int32_t>(le(4))); break;  // BININT
        case 0x8a: {                          // LONG1
          const size_t n = u8();
          int64_t v = 0;
          for (size_t k = 0; k < n && k < 8; ++k) v |= static_cast<int64_t>(uint8_t(d_[pos_ + k])) << (8 * k);
          if (n > 0 && n < 8 && (uint8_t(d_[pos_ + n - 1]) & 0x80)) v -= int64_t(1) << (8 * n);
          skip(n);
          push_int(v);
          break;
        }
        case 'G': {                           // BINFLOAT (big endian)
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | uint8_t(d_[pos_ + k]);
          skip(8);
          auto p = make(PObj::Float);
          std::memcpy(&p->f, &bits, 8);
          stack_.push_back(p);
          break;
        }
        case 'X': push_str(le(4)); break;     // BINUNICODE
        case 0x8c: push_str(u8()); break;     // SHORT_BINUNICODE
        case 0x8d: push_str(le(8)); break;    // BINUNICODE8
        case 'B': push_str(le(4)); break;     // BINBYTES
        case 'C': push_str(u8()); break;      // SHORT_BINBYTES
        case 'c': {                           // GLOBAL "module\nname\n"
          auto g = make(PObj::Global);
          g->s = line();
          g->s2 = line();
          stack_.push_back(g);
          break;
        }
        case 0x93: {                          // STACK_GLOBAL
          auto name = pop(), mod = pop();
          auto g = make(PObj::Global);
          g->s = mod->s;
          g->s2 = name->s;
          stack_.push_back(g);
          break;
        }
        case 'q': memo_[u8()] = top(); break;             // BINPUT
        case 'r': memo_[le(4)] = top(); break;            // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;    // MEMOIZE
        case 'h': stack_.push_back(memo_at(u8())); break;  // BINGET
        case 'j': stack_.push_back(memo_at(le(4))); break;  // LONG_BINGET
        case ')': stack_.push_back(make(PObj::Tuple)); break;
        case 't': { auto p = make(PObj::Tuple); p->items = pop_mark(); stack_.push_back(p); break; }
        case 0x85: case 0x86: case 0x87: {   // TUPLE1..3
          const size_t n = op - 0x84;
          auto p = make(PObj::Tuple);
          p->items.resize(n);
          for (size_t k = n; k-- > 0;) p->items[k] = pop();
          stack_.push_back(p);
          break;
        }
        case ']': stack_.push_back(make(PObj::List)); break;
        case '}': stack_.push_back(make(PObj::Dict)); break;
        case 'a': { auto v = pop(); top()->items.push_back(v); break; }  // APPEND
        case 'e': { auto vs = pop_mark(); auto l = top(); l->items.insert(l->items.end(), vs.begin(), vs.end()); break; }
        case 's': { auto v = pop(), k = pop(); dict_of(top()).emplace_back(k, v); break; }  // SETITEM
        case 'u': {                           // SETITEMS
          auto kv = pop_mark();
          TORCH_CHECK(kv.size() % 2 == 0, "odd SETITEMS");
          auto& dct = dict_of(top());
          for (size_t k = 0; k < kv.size(); k += 2) dct.emplace_back(kv[k], kv[k + 1]);
          break;
        }
        case 'Q': stack_.push_back(persistent_load(pop())); break;  // BINPERSID
        case 'R': { auto args = pop(), fn = pop(); stack_.push_back(reduce(fn, args)); break; }
        case 0x81: { auto args = pop(), cls = pop(); stack_.push_back(reduce(cls, args)); break; }  // NEWOBJ
        case 'b': pop(); break;               // BUILD: state (OrderedDict _metadata) is not needed
        default:
          TORCH_CHECK(false, "unsupported pickle opcode 0x", std::hex, int(op), " at byte ", std::dec, pos_ - 1);
      }
    }
  }

 private:
  uint8_t u8() {
    TORCH_CHECK(pos_ < d_.size(), "truncated pickle");
    return uint8_t(d_[pos_++]);
  }
  void skip(size_t n) {
    TORCH_CHECK(pos_ + n <= d_.size(), "truncated pickle");
    pos_ += n;
  }
  uint64_t le(int n) {
    TORCH_CHECK(pos_ + n <= d_.size(), "truncated pickle");
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= uint64_t(uint8_t(d_[pos_ + k])) << (8 * k);
    pos_ += n;
    return v;
  }
  std::string line() {
    auto e = d_.find('\n', pos_);
    TORCH_CHECK(e != std::string::npos, "truncated pickle");
    auto s = d_.substr(pos_, e - pos_);
    pos_ = e + 1;
    return s;
  }
  void push_int(int64_t v) {
    auto p = make(PObj::Int);
    p->i = v;
    stack_.push_back(p);
  }
  void push_str(uint64_t n) {
    TORCH_CHECK(pos_ + n <= d_.size(), "truncated pickle");
    auto p = make(PObj::String);
    p->s = d_.substr(pos_, n);
    pos_ += n;
    stack_.push_back(p);
  }
  PPtr pop() {
    TORCH_CHECK(!stack_.empty(), "corrupt pickle (stack underflow)");
    auto p = stack_.back();
    stack_.pop_back();
    return p;
  }
  PPtr top() {
    TORCH_CHECK(!stack_.empty(), "corrupt pickle (empty stack)");
    return stack_.back();
  }
  PPtr memo_at(uint64_t k) {
    auto it = memo_.find(k);
    TORCH_CHECK(it != memo_.end(), "corrupt pickle (memo ", k, ")");
    return it->second;
  }
  std::vector<PPtr> pop_mark() {
    std::vector<PPtr> out;
    while (true) {
      auto p = pop();
      if (p->kind == PObj::Mark) break;
      out.push_back(p);
    }
    std::reverse(out.begin(), out.end());
    return out;
  }
  std::vector<std::pair<PPtr, PPtr>>& dict_of(const PPtr& p) {
    TORCH_CHECK(p->kind == PObj::Dict, "corrupt pickle (SETITEM on a non-dict)");
    return p->dict;
  }

  PPtr persistent_load(const PPtr& pid) {
    // ('storage', <storage type global>, key, location, numel)
    TORCH_CHECK(pid->kind == PObj::Tuple && pid->items.size() >= 5 && pid->items[0]->s == "storage",
                "unsupported persistent id");
    const auto dtype = storage_dtype(pid->items[1]->s2);
    const std::string key = pid->items[2]->s;
    const int64_t numel = pid->items[4]->i;
    auto it = storages_.find(key);
    if (it == storages_.end()) {
      const std::string record = "data/" + key;
      TORCH_CHECK(zip_.hasRecord(record), "missing tensor data record '", record, "'");
      auto [ptr, size] = zip_.getRecord(record);
      const auto bytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
      TORCH_CHECK(size >= bytes, "tensor data record '", record, "' has ", size, " bytes, ", bytes, " expected");
      auto t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
      std::memcpy(t.data_ptr(), ptr.get(), bytes);
      it = storages_.emplace(key, t).first;
    }
    auto p = make(PObj::Storage);
    p->tensor = it->second;
    return p;
  }

  static std::vector<int64_t> ints(const PPtr& tuple) {
    std::vector<int64_t> v;
    for (const auto& x : tuple->items) v.push_back(x->i);
    return v;
  }

  PPtr reduce(const PPtr& fn, const PPtr& args) {
    TORCH_CHECK(fn->kind == PObj::Global, "corrupt pickle (REDUCE of a non-callable)");
    const std::string name = fn->s + "." + fn->s2;
    if (name == "collections.OrderedDict" || name == "builtins.dict") return make(PObj::Dict);
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      const auto& a = args->items;
      TORCH_CHECK(a.size() >= 4 && a[0]->kind == PObj::Storage, "unexpected arguments to ", name);
      auto p = make(PObj::Tensor);
      p->tensor = a[0]->tensor.as_strided(ints(a[2]), ints(a[3]), a[1]->i);
      return p;
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      TORCH_CHECK(!args->items.empty() && args->items[0]->kind == PObj::Tensor, "unexpected arguments to ", name);
      return args->items[0];
    }
    TORCH_CHECK(false, "unsupported object ", name, " (rmnet reads state_dicts of tensors)");
  }

  const std::string& d_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  size_t pos_ = 0;
  std::vector<PPtr> stack_;
  std::map<uint64_t, PPtr> memo_;
  std::map<std::string, torch::Tensor> storages_;
};

StateDict read_zip_state_dict(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "not a torch.save zip archive (", e.what_without_backtrace(), ")");
  }
  if (zip->hasRecord("constants.pkl") || zip->hasRecord("code/__torch__.py")) {  // TorchScript
    auto m = torch::jit::load(path);
    StateDict sd;
    for (const auto& p : m.named_parameters(true)) sd.emplace_back(p.name, p.value.detach());
    for (const auto& b : m.named_buffers(true)) sd.emplace_back(b.name, b.value.detach());
    return sd;
  }
  TORCH_CHECK(zip->hasRecord("data.pkl"), "the archive holds no data.pkl");
  auto [ptr, size] = zip->getRecord("data.pkl");
  const std::string data(static_cast<const char*>(ptr.get()), size);
  auto root = Unpickler(data, *zip).run();
  TORCH_CHECK(root->kind == PObj::Dict, "the file holds a pickled object that is not a state_dict");
  StateDict sd;
  for (const auto& [k, v] : root->dict) {
    TORCH_CHECK(k->kind == PObj::String, "a state_dict key is not a string");
    TORCH_CHECK(v->kind == PObj::Tensor, "state_dict entry '", k->s, "' is not a tensor");
    sd.emplace_back(k->s, v->tensor.contiguous());
  }
  return sd;
}

}  // namespace

StateDict read_state_dict(const std::string& path) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "weights file '", path, "': no such file");
  try {
    return read_zip_state_dict(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "weights file '", path, "': ", e.what_without_backtrace());
  }
}

void load_state_dict(ModelImpl& model, const StateDict& state, const std::string& source) {
  std::map<std::string, torch::Tensor> remaining(state.begin(), state.end());
  torch::NoGradGuard no_grad;
  auto copy_in = [&](const std::string& key, torch::Tensor& dst) {
    auto it = remaining.find(key);
    TORCH_CHECK(it != remaining.end(), source, ": missing key '", key, "' (expected shape ", dst.sizes(), ")");
    TORCH_CHECK(it->second.sizes() == dst.sizes(), source, ": '", key, "' has shape ", it->second.sizes(),
                " in the file, but the ", model.options().arch(), " model expects ", dst.sizes());
    dst.copy_(it->second);
    remaining.erase(it);
  };
  for (auto& p : model.named_parameters(true)) copy_in(p.key(), p.value());
  for (auto& b : model.named_buffers(true)) copy_in(b.key(), b.value());
  TORCH_CHECK(remaining.empty(), source, ": unexpected key '", remaining.begin()->first, "' (shape ",
              remaining.begin()->second.sizes(), ") for a ", model.options().arch(), " model");
}

ModelPtr import_torchvision(const std::string& arch, const std::string& path, int64_t num_classes) {
  static const std::vector<std::string> supported = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                                     "mobilenet_v2"};
  TORCH_CHECK(std::find(supported.begin(), supported.end(), arch) != supported.end(), "--torchvision: '", arch,
              "' is not one of resnet18, resnet34, resnet50, resnet101, resnet152, mobilenet_v2");
  const auto state = read_state_dict(path);
  const std::string fc_key = arch == "mobilenet_v2" ? "classifier.1.weight" : "fc.weight";
  int64_t classes = num_classes;
  for (const auto& [k, t] : state)
    if (k == fc_key && num_classes == 0) classes = t.size(0);
  TORCH_CHECK(classes > 0, "weights file '", path, "': no '", fc_key, "' to infer the number of classes from (is it a ",
              arch, "?)");
  auto model = create_model(ModelOptions(arch).num_classes(classes));
  load_state_dict(*model, state, "weights file '" + path + "'");
  model->metadata()["imported_from"] = path;
  Preprocess().to_metadata(model->metadata());  // torchvision's ImageNet evaluation transform
  model->eval();
  return model;
}

}  // namespace rmnet
