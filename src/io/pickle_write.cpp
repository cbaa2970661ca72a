// The torch.save pickle writer (see pickle.h): the pickle torch.save writes for an OrderedDict of
// tensors. The reader is in pickle_read.cpp; the storage-type table and the zip archive layer are
// in pickle.cpp.
#include "pickle.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include <torch/torch.h>

namespace rmnet::detail {
namespace {

class Pickler {
 public:
  PickledStateDict result;

  void write(const StateDict& items) {
    op(0x80);  // PROTO 2
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
  void op(uint8_t b) { result.pickle.push_back(static_cast<char>(b)); }
  void le32(uint32_t v) {
    for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(v >> (8 * k)));
  }
  void global(const std::string& mod, const std::string& name) {
    op('c');
    result.pickle += mod + "\n" + name + "\n";
  }
  void unicode(const std::string& s) {
    TORCH_CHECK(s.size() <= std::numeric_limits<uint32_t>::max(), "a state_dict key of ", s.size(),
                " bytes is too long");
    op('X');
    le32(static_cast<uint32_t>(s.size()));
    result.pickle += s;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      le32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      op(0x8a);  // LONG1, 8 bytes
      op(8);
      for (int k = 0; k < 8; ++k) op(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * k)));
    }
  }
  void int_tuple(c10::IntArrayRef v) {
    op('(');
    for (auto x : v) integer(x);
    op('t');
  }
  void tensor(const torch::Tensor& t0) {
    auto t = t0.detach().cpu().contiguous();
    const auto key = std::to_string(result.storages.size());
    const char* type = storage_name(t.scalar_type());
    result.storages.push_back(t);
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');  // persistent id: ('storage', torch.XStorage, key, 'cpu', numel)
    unicode("storage");
    global("torch", type);
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

PickledStateDict pickle_state_dict(const StateDict& items) {
  Pickler p;
  p.write(items);
  return std::move(p.result);
}

}  // namespace rmnet::detail
