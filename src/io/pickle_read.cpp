// The torch.save pickle reader (see pickle.h): a pickle machine for the opcodes a state_dict uses,
// interpreting untrusted input with every read bounds-checked. The writer is in pickle_write.cpp;
// the storage-type table and the zip archive layer are in pickle.cpp.
#include "pickle.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace rmnet::detail {
namespace {

/// A pickled object. Objects live in the unpickler's arena and refer to each other by plain
/// pointer, so a pickle that builds a cycle (a list appended to itself through the memo) neither
/// leaks nor recurses.
struct PObj {
  enum Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Tensor, Storage, Mark } kind = None;
  int64_t i = 0;
  double f = 0;
  std::string s, s2;  // String; Global module/name
  std::vector<PObj*> items;  // Tuple, List
  std::vector<std::pair<PObj*, PObj*>> dict;
  torch::Tensor tensor;  // Tensor; Storage (1-D, the whole storage)
};

class Unpickler {
 public:
  Unpickler(std::string_view data, const StorageLoader& load) : d_(data), load_(load) {}

  PObj* run() {
    while (true) {
      const size_t at = pos_;
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;     // PROTO
        case 0x95: skip(8); break;  // FRAME (length; frames are read as one stream)
        case '.': return pop();     // STOP
        case '(': push(make(PObj::Mark)); break;
        case 'N': push(make(PObj::None)); break;
        case 0x88:
        case 0x89: {  // NEWTRUE / NEWFALSE
          auto* p = make(PObj::Bool);
          p->i = op == 0x88;
          push(p);
          break;
        }
        case 'K': push_int(u8()); break;                                 // BININT1
        case 'M': push_int(static_cast<int64_t>(le(2))); break;         // BININT2
        case 'J': push_int(static_cast<int32_t>(le(4))); break;         // BININT
        case 0x8a: push_int(long1(u8())); break;                         // LONG1
        case 'G': push_float(); break;                                   // BINFLOAT (big endian)
        case 'X': push_str(le(4)); break;                                // BINUNICODE
        case 0x8c: push_str(u8()); break;                                // SHORT_BINUNICODE
        case 0x8d: push_str(le(8)); break;                               // BINUNICODE8
        case 'B': push_str(le(4)); break;                                // BINBYTES
        case 'C': push_str(u8()); break;                                 // SHORT_BINBYTES
        case 'c': {                                                      // GLOBAL "module\nname\n"
          auto* g = make(PObj::Global);
          g->s = line();
          g->s2 = line();
          push(g);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto* name = pop();
          auto* mod = pop();
          TORCH_CHECK(mod->kind == PObj::String && name->kind == PObj::String,
                      "corrupt pickle (STACK_GLOBAL of a non-string at byte ", at, ")");
          auto* g = make(PObj::Global);
          g->s = mod->s;
          g->s2 = name->s;
          push(g);
          break;
        }
        case 'q': memo_[u8()] = top(); break;                  // BINPUT
        case 'r': memo_[le(4)] = top(); break;                 // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;         // MEMOIZE
        case 'h': push(memo_at(u8())); break;                  // BINGET
        case 'j': push(memo_at(le(4))); break;                 // LONG_BINGET
        case ')': push(make(PObj::Tuple)); break;              // EMPTY_TUPLE
        case 't': {                                            // TUPLE
          auto* p = make(PObj::Tuple);
          p->items = pop_mark();
          push(p);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84;
          auto* p = make(PObj::Tuple);
          p->items.resize(n);
          for (size_t k = n; k-- > 0;) p->items[k] = pop();
          push(p);
          break;
        }
        case ']': push(make(PObj::List)); break;  // EMPTY_LIST
        case '}': push(make(PObj::Dict)); break;  // EMPTY_DICT
        case 'a': {                               // APPEND
          auto* v = pop();
          list_of(top()).push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          auto vs = pop_mark();
          auto& l = list_of(top());
          l.insert(l.end(), vs.begin(), vs.end());
          break;
        }
        case 's': {  // SETITEM
          auto* v = pop();
          auto* k = pop();
          dict_of(top()).emplace_back(k, v);
          break;
        }
        case 'u': {  // SETITEMS
          auto kv = pop_mark();
          TORCH_CHECK(kv.size() % 2 == 0, "corrupt pickle (SETITEMS with an odd number of values at byte ", at, ")");
          auto& dct = dict_of(top());
          for (size_t k = 0; k < kv.size(); k += 2) dct.emplace_back(kv[k], kv[k + 1]);
          break;
        }
        case 'Q': push(persistent_load(pop())); break;  // BINPERSID
        case 'R':                                        // REDUCE
        case 0x81: {                                     // NEWOBJ
          auto* args = pop();
          auto* fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': pop(); break;  // BUILD: the state (an OrderedDict's _metadata) is not needed
        default:
          TORCH_CHECK(false, "unsupported pickle opcode 0x", std::hex, int(op), std::dec, " at byte ", at);
      }
    }
  }

 private:
  PObj* make(PObj::Kind k) {
    arena_.emplace_back();
    arena_.back().kind = k;
    return &arena_.back();
  }
  size_t left() const { return d_.size() - pos_; }
  void need(uint64_t n) const {
    TORCH_CHECK(n <= left(), "truncated pickle (", n, " bytes needed at byte ", pos_, ", ", left(), " left)");
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(d_[pos_++]);
  }
  void skip(uint64_t n) {
    need(n);
    pos_ += n;
  }
  uint64_t le(int n) {
    need(n);
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= uint64_t(static_cast<uint8_t>(d_[pos_ + k])) << (8 * k);
    pos_ += n;
    return v;
  }
  /// LONG1: n little-endian two's-complement bytes. Values beyond 64 bits are refused.
  int64_t long1(size_t n) {
    TORCH_CHECK(n <= 8, "unsupported pickle integer of ", n, " bytes at byte ", pos_);
    need(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= uint64_t(static_cast<uint8_t>(d_[pos_ + k])) << (8 * k);
    if (n > 0 && n < 8 && (static_cast<uint8_t>(d_[pos_ + n - 1]) & 0x80)) v |= ~uint64_t(0) << (8 * n);
    pos_ += n;
    return static_cast<int64_t>(v);
  }
  void push_float() {
    need(8);
    uint64_t bits = 0;
    for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(d_[pos_ + k]);
    pos_ += 8;
    auto* p = make(PObj::Float);
    std::memcpy(&p->f, &bits, 8);
    push(p);
  }
  std::string line() {
    const auto e = d_.find('\n', pos_);
    TORCH_CHECK(e != std::string_view::npos, "truncated pickle (no end of line after byte ", pos_, ")");
    std::string s(d_.substr(pos_, e - pos_));
    pos_ = e + 1;
    return s;
  }
  void push(PObj* p) { stack_.push_back(p); }
  void push_int(int64_t v) {
    auto* p = make(PObj::Int);
    p->i = v;
    push(p);
  }
  void push_str(uint64_t n) {
    need(n);
    auto* p = make(PObj::String);
    p->s = std::string(d_.substr(pos_, n));
    pos_ += n;
    push(p);
  }
  PObj* pop() {
    TORCH_CHECK(!stack_.empty(), "corrupt pickle (stack underflow at byte ", pos_, ")");
    auto* p = stack_.back();
    stack_.pop_back();
    return p;
  }
  PObj* top() {
    TORCH_CHECK(!stack_.empty(), "corrupt pickle (empty stack at byte ", pos_, ")");
    return stack_.back();
  }
  PObj* memo_at(uint64_t k) {
    auto it = memo_.find(k);
    TORCH_CHECK(it != memo_.end(), "corrupt pickle (memo ", k, " not set)");
    return it->second;
  }
  std::vector<PObj*> pop_mark() {
    std::vector<PObj*> out;
    while (true) {
      auto* p = pop();
      if (p->kind == PObj::Mark) break;
      out.push_back(p);
    }
    std::reverse(out.begin(), out.end());
    return out;
  }
  std::vector<PObj*>& list_of(PObj* p) {
    TORCH_CHECK(p->kind == PObj::List, "corrupt pickle (APPEND to a non-list at byte ", pos_, ")");
    return p->items;
  }
  std::vector<std::pair<PObj*, PObj*>>& dict_of(PObj* p) {
    TORCH_CHECK(p->kind == PObj::Dict, "corrupt pickle (SETITEM on a non-dict at byte ", pos_, ")");
    return p->dict;
  }

  PObj* persistent_load(PObj* pid) {
    // ('storage', <storage type global>, key, location, numel)
    TORCH_CHECK(pid->kind == PObj::Tuple && pid->items.size() >= 5 && pid->items[0]->kind == PObj::String &&
                    pid->items[0]->s == "storage",
                "unsupported persistent id (rmnet reads tensor storages only)");
    const auto* type = pid->items[1];
    const auto* key = pid->items[2];
    const auto* numel = pid->items[4];
    TORCH_CHECK(type->kind == PObj::Global && type->s == "torch", "unsupported storage type (not a torch.*Storage)");
    TORCH_CHECK(key->kind == PObj::String, "corrupt pickle (storage key is not a string)");
    TORCH_CHECK(numel->kind == PObj::Int && numel->i >= 0, "corrupt pickle (storage size is not a count)");
    const auto dtype = storage_dtype(type->s2);
    auto it = storages_.find(key->s);
    if (it == storages_.end()) {
      auto t = load_(key->s, dtype, numel->i);
      TORCH_CHECK(t.defined() && t.dim() == 1 && t.numel() == numel->i && t.scalar_type() == dtype,
                  "storage '", key->s, "' could not be loaded");
      it = storages_.emplace(key->s, t).first;
    }
    TORCH_CHECK(it->second.scalar_type() == dtype && it->second.numel() == numel->i, "storage '", key->s,
                "' is used with two types or sizes");
    auto* p = make(PObj::Storage);
    p->tensor = it->second;
    return p;
  }

  static std::vector<int64_t> ints(const PObj* tuple, const char* what) {
    TORCH_CHECK(tuple->kind == PObj::Tuple, "corrupt pickle (tensor ", what, " is not a tuple)");
    std::vector<int64_t> v;
    for (const auto* x : tuple->items) {
      TORCH_CHECK(x->kind == PObj::Int && x->i >= 0, "corrupt pickle (tensor ", what, " holds a non-count)");
      v.push_back(x->i);
    }
    return v;
  }

  /// A view (offset, sizes, strides) of a storage of `n` elements, checked to lie inside it.
  static torch::Tensor view_of(const torch::Tensor& storage, int64_t offset, const std::vector<int64_t>& sizes,
                               const std::vector<int64_t>& strides) {
    TORCH_CHECK(sizes.size() == strides.size(), "corrupt pickle (", sizes.size(), " sizes but ", strides.size(),
                " strides)");
    TORCH_CHECK(offset >= 0, "corrupt pickle (negative storage offset)");
    const int64_t n = storage.numel();
    bool empty = false;
    for (auto s : sizes) empty |= s == 0;
    if (!empty) {
      // last element's index: offset + sum (size - 1) * stride, without overflow
      uint64_t last = static_cast<uint64_t>(offset);
      for (size_t k = 0; k < sizes.size(); ++k) {
        const auto a = static_cast<uint64_t>(sizes[k] - 1), b = static_cast<uint64_t>(strides[k]);
        TORCH_CHECK(b == 0 || a <= (std::numeric_limits<uint64_t>::max() - last) / b,
                    "corrupt pickle (tensor view overflows)");
        last += a * b;
      }
      TORCH_CHECK(last < static_cast<uint64_t>(n), "corrupt pickle (tensor view of sizes ", c10::IntArrayRef(sizes),
                  " and strides ", c10::IntArrayRef(strides), " at offset ", offset, " exceeds its storage of ", n, " elements)");
    }
    return storage.as_strided(sizes, strides, offset);
  }

  PObj* reduce(const PObj* fn, const PObj* args) {
    TORCH_CHECK(fn->kind == PObj::Global, "corrupt pickle (REDUCE of a non-callable)");
    TORCH_CHECK(args->kind == PObj::Tuple, "corrupt pickle (REDUCE arguments are not a tuple)");
    const std::string name = fn->s + "." + fn->s2;
    const auto& a = args->items;
    if (name == "collections.OrderedDict" || name == "builtins.dict") return make(PObj::Dict);
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      TORCH_CHECK(a.size() >= 4 && a[0]->kind == PObj::Storage && a[1]->kind == PObj::Int,
                  "unexpected arguments to ", name);
      auto* p = make(PObj::Tensor);
      p->tensor = view_of(a[0]->tensor, a[1]->i, ints(a[2], "sizes"), ints(a[3], "strides"));
      return p;
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      TORCH_CHECK(!a.empty() && a[0]->kind == PObj::Tensor, "unexpected arguments to ", name);
      return a[0];
    }
    TORCH_CHECK(false, "unsupported object ", name, " (rmnet reads state_dicts of tensors)");
  }

  std::string_view d_;
  const StorageLoader& load_;
  size_t pos_ = 0;
  std::deque<PObj> arena_;
  std::vector<PObj*> stack_;
  std::map<uint64_t, PObj*> memo_;
  std::map<std::string, torch::Tensor> storages_;
};

}  // namespace

void check_pickle_for_libtorch(std::string_view p, const std::string& what) {
  size_t i = 0, memo = 0;  // memo: entries stored so far (BINPUT/LONG_BINPUT/MEMOIZE)
  const auto fail = [&](const std::string& why) {
    TORCH_CHECK(false, what, ": corrupt pickle at byte ", i, ": ", why);
  };
  const auto need = [&](uint64_t n) {
    if (n > p.size() - i) fail("a length of " + std::to_string(n) + " bytes runs past the end (" +
                               std::to_string(p.size() - i) + " left)");
  };
  const auto uint_le = [&](size_t n) {  // an n-byte little-endian unsigned argument
    need(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i + k])) << (8 * k);
    i += n;
    return v;
  };
  const auto skip = [&](size_t width) {  // a length of `width` bytes, then that many bytes
    const uint64_t n = uint_le(width);
    need(n);
    i += static_cast<size_t>(n);
  };
  const auto line = [&] {  // a newline-terminated argument
    const size_t nl = p.find('\n', i);
    if (nl == std::string_view::npos) fail("an unterminated text argument");
    i = nl + 1;
  };
  const auto put = [&](uint64_t id) {
    if (id > memo) fail("memo index " + std::to_string(id) + " with " + std::to_string(memo) + " entries stored");
    if (id == memo) ++memo;
  };
  while (i < p.size()) {
    const uint8_t op = static_cast<uint8_t>(p[i++]);
    switch (op) {
      case '.': return;  // STOP
      // no argument
      case '(': case '0': case '1': case '2': case 'N': case 0x88: case 0x89: case '}': case ']': case ')':
      case 't': case 0x85: case 0x86: case 0x87: case 'a': case 'e': case 's': case 'u': case 'd': case 'l':
      case 'b': case 'R': case 0x81: case 'Q': case 0x93: case 'o': case 0x8f: case 0x90: case 0x91:
        break;
      case 0x94: put(memo); break;  // MEMOIZE
      // fixed-size arguments
      case 'K': case 'h': case 0x80: uint_le(1); break;  // BININT1, BINGET, PROTO
      case 'M': uint_le(2); break;                       // BININT2
      case 'J': case 'j': uint_le(4); break;             // BININT, LONG_BINGET
      case 'G': case 0x95: uint_le(8); break;            // BINFLOAT, FRAME
      case 'q': put(uint_le(1)); break;                  // BINPUT
      case 'r': put(uint_le(4)); break;                  // LONG_BINPUT
      // length-prefixed arguments
      case 'U': case 0x8c: case 'C': case 0x8a: skip(1); break;  // SHORT_BINSTRING/-UNICODE/-BYTES, LONG1
      case 'T': case 'X': case 'B': case 0x8b: skip(4); break;   // BINSTRING, BINUNICODE, BINBYTES, LONG4
      case 0x8d: case 0x8e: case 0x96: skip(8); break;           // BINUNICODE8, BINBYTES8, BYTEARRAY8
      // text arguments
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': case 'g': line(); break;
      case 'p': line(); ++memo; break;  // PUT (text index; LibTorch does not read it, counted only)
      case 'c': case 'i': line(); line(); break;  // GLOBAL, INST: module and name lines
      default: fail("unknown opcode " + std::to_string(op));
    }
  }
  fail("no STOP opcode");
}

StateDict unpickle_state_dict(std::string_view pickle, const StorageLoader& load) {
  Unpickler u(pickle, load);
  const auto* root = u.run();
  TORCH_CHECK(root->kind == PObj::Dict, "the file holds a pickled object that is not a state_dict");
  StateDict sd;
  for (const auto& [k, v] : root->dict) {
    TORCH_CHECK(k->kind == PObj::String, "a state_dict key is not a string");
    TORCH_CHECK(v->kind == PObj::Tensor, "state_dict entry '", k->s, "' is not a tensor");
    sd.emplace_back(k->s, v->tensor.contiguous());
  }
  return sd;
}

}  // namespace rmnet::detail
