// Dirac shortcuts (DeployOptions::dirac_shortcuts): the channels an RM block reserves, run as the
// shortcut they are instead of as convolution channels. See find_dirac_shortcuts in onednn_steps.h.
//
// An RM ResNet identity block is, in the plain chain, conv A = [W1 ; D] (+ ReLU), optionally
// convs M = [[W2, 0], [0, D]] (+ ReLU) (bottlenecks), then the merge conv B = [W3 | D] (+ ReLU),
// where D passes a channel through: weight 1 at the centre tap, nothing else, no bias. Computed
// as convolutions, the D rows and columns cost as many MACs as the branch (1.6-3.9x the residual
// network's MACs over a whole ResNet). The pass finds that pattern in the compiled steps by the
// weights alone (any plain network: converted, pruned with its reserved channels left as they
// were, or written by hand), drops the D rows and columns from A, M and B, marks A as keeping its
// input and B as adding it: B's output is then act(B'(h) + x), computed by the executor as a sum
// post-op of B's convolution into a buffer holding x.
//
// MobileNetV2's inverted residuals are the same pattern (A the expand 1x1, M the depthwise 3x3 with
// Dirac groups, B the linear projection) except that the copies pass a per-channel clamp step that
// oneDNN's eltwise post-ops cannot express: (-inf, inf) on the copies and [0, 6] (ReLU6) or [0, inf)
// (a ReLU, from a PReLU of slopes 0 and 1) on the branch. The pass looks through such a clamp where
// it leaves the copies unchanged (or is a ReLU on all of them), slices it with the kept rows, and
// where it is then the same on every channel makes it the conv's post-op (hardtanh or ReLU) and
// drops the step.
//
// Exactness: a copy channel of A is act_A(1 * x + 0) = act_A(x); it goes through M's activations
// (act(act(x)) = act(x) for ReLU) and enters B with weight 1. So B's output is the same sum with
// the same terms; only the order of the float additions differs (the x term is added after the
// branch's products instead of among them). Where x may be negative and a ReLU was on the copy's
// path, the executor applies it to x first (shortcut_act). A copy weight f > 0 other than 1 (a
// ResNet trained with shortcut scales, ModelOptions::shortcut_scale, reserves relu(s * x); B's
// copy column may carry a weight too) is a factor: relu(f * x) = f * relu(x), so the copy is the
// product of the factors on its path times x, and the merge adds x scaled per channel (an identity
// merge: one multiply per element before the sum post-op) or folds the factors into the projection's
// weights. Biases must be 0 and "exactly 1" (no scaling) means within a few units in the last place
// of the compute dtype (the identity BN of a converted block folds to 1 +- 1 ulp in float32;
// replacing w * x + b by x then moves the result by less than the float32 rounding the conv itself
// makes): tolerances below. A copy weight <= 0 is not a copy (relu(-x) is not a function of relu(x)):
// its row stays a computed channel.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "onednn_steps.h"
#include "rmnet/convert/verify.h"
#include "rmnet/deploy/shortcuts.h"
#include "rmnet/ir/chain.h"
#include "rmnet/models/plain.h"

namespace rmnet {

bool dirac_shortcuts_default() {
  const char* v = std::getenv("RMNET_DIRAC_SHORTCUTS");
  return !(v && std::string(v) == "0");
}

namespace detail {
namespace {

using torch::Tensor;

/// A conv the pass can rewrite: an odd kernel padded by half of it (a copy through the centre tap at
/// stride s is x[s*i, s*j]), ReLU or no activation; dense
/// (grouped convs only as an M whose groups are all copies or all branch: the RM bottleneck's
/// middle conv, [[W2, 0], [0, D]] as groups).
bool eligible(const Step& s) {
  return s.kind == StepKind::Conv && s.kernel % 2 == 1 && !s.on_kept &&
         s.padding == s.kernel / 2 && (s.attr == "relu" || s.attr == "none") && !s.keeps_input &&
         s.shortcut_from < 0 && s.copies == 0;
}

/// Tolerance of "exactly 1" and "exactly 0" for a Dirac weight of dtype `t` (see the file comment).
double one_tol(torch::ScalarType t) { return t == torch::kBFloat16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -21); }

struct ConvView {
  Tensor w;     // [O, I/groups, k*k] float64
  Tensor bias;  // [O] float64 (zeros where none)
  int64_t center = 0, groups = 1;
  double tol = 0;
  int64_t in_g() const { return w.size(1); }
  int64_t out_g() const { return w.size(0) / groups; }
};

ConvView view_of(const Step& s) {
  ConvView v;
  v.w = s.weight.to(torch::kDouble).reshape({s.out, s.in / s.groups, s.kernel * s.kernel});
  v.groups = s.groups;
  v.bias = s.bias.defined() ? s.bias.to(torch::kDouble) : torch::zeros({s.out}, torch::kDouble);
  v.center = (s.kernel / 2) * s.kernel + s.kernel / 2;
  v.tol = one_tol(s.weight.scalar_type());
  return v;
}

/// Per line of a weight matrix: the channel its lone weight reads and that weight (a copy's factor),
/// or channel -1.
struct Lone {
  std::vector<int64_t> at;
  std::vector<double> factor;
};

/// For each line of `m` [L, n * k*k] (n channels of k*k taps) whose only non-zero entry is positive
/// (above the dtype's tolerance) at a centre tap: that entry's channel and value; -1 for the other
/// lines. One pass over the weights (a per-line loop of tensor ops took seconds on the RM resnet50's
/// thousands of reserved channels).
Lone lone_centre_positives(const Tensor& m, const ConvView& v) {
  const Tensor nz = m.ne(0);
  const Tensor count = nz.sum(1);
  const Tensor at = nz.to(torch::kInt).argmax(1);
  const Tensor val = m.gather(1, at.unsqueeze(1)).squeeze(1);
  const auto c = count.accessor<int64_t, 1>();
  const auto a = at.accessor<int64_t, 1>();
  const auto x = val.accessor<double, 1>();
  const int64_t kk = v.w.size(2);
  Lone out{std::vector<int64_t>(m.size(0), -1), std::vector<double>(m.size(0), 0.0)};
  for (int64_t l = 0; l < m.size(0); ++l)
    if (c[l] == 1 && a[l] % kk == v.center && x[l] > v.tol) {
      out.at[l] = a[l] / kk;
      out.factor[l] = x[l];
    }
  return out;
}

/// For each output row of a dense conv: the input channel it copies times a positive factor (its
/// only non-zero weight, at the centre tap of that channel; its bias ~0), or -1.
Lone copy_rows(const ConvView& v) {
  auto src = lone_centre_positives(v.w.reshape({v.w.size(0), -1}), v);
  const auto b = v.bias.accessor<double, 1>();
  for (size_t r = 0; r < src.at.size(); ++r)
    if (std::abs(b[r]) > v.tol) src.at[r] = -1;
  return src;
}

/// For each input channel j: the row that reads it (its only non-zero weight in the column, positive,
/// at the centre tap; in a grouped conv, among the rows of j's group) and that weight, or -1.
Lone column_targets(const ConvView& v) {
  const int64_t g = v.groups, og = v.out_g(), ig = v.in_g();
  const Tensor cols = v.w.reshape({g, og, ig, v.w.size(2)}).permute({0, 2, 1, 3}).reshape({g * ig, -1});
  auto target = lone_centre_positives(cols, v);
  for (size_t j = 0; j < target.at.size(); ++j)
    if (target.at[j] >= 0) target.at[j] += static_cast<int64_t>(j) / ig * og;
  return target;
}

/// For each output row: whether it has a single non-zero weight and a ~0 bias (a pure copy of the
/// input channel whose column targets it).
std::vector<bool> single_weight_rows(const ConvView& v) {
  const Tensor count = v.w.reshape({v.w.size(0), -1}).ne(0).sum(1);
  const auto c = count.accessor<int64_t, 1>();
  const auto b = v.bias.accessor<double, 1>();
  std::vector<bool> out(v.w.size(0));
  for (int64_t r = 0; r < v.w.size(0); ++r) out[r] = c[r] == 1 && std::abs(b[r]) <= v.tol;
  return out;
}

/// The rows with no copy source (src < 0): a conv's branch rows.
std::vector<int64_t> branch_rows(const std::vector<int64_t>& src) {
  std::vector<int64_t> rows;
  for (size_t r = 0; r < src.size(); ++r)
    if (src[r] < 0) rows.push_back(static_cast<int64_t>(r));
  return rows;
}

/// A grouped conv's copy rows (`next` >= 0) fill whole groups, and so do its branch rows.
bool whole_groups(const ConvView& v, const std::vector<int64_t>& next) {
  if (v.groups == 1) return true;
  for (int64_t g = 0; g < v.groups; ++g) {
    int64_t copies = 0;
    for (int64_t r = g * v.out_g(); r < (g + 1) * v.out_g(); ++r) copies += next[r] >= 0;
    if (copies != 0 && (copies != v.out_g() || v.in_g() != v.out_g())) return false;
  }
  return true;
}

/// Whether steps[i]'s output is >= 0 everywhere (known from the activations alone).
bool nonnegative_output(const std::vector<Step>& steps, size_t i) {
  for (;;) {
    const Step& s = steps[i];
    switch (s.kind) {
      case StepKind::Conv: return s.attr == "relu" || (s.attr == "hardtanh" && s.scalars[0] >= 0);
      case StepKind::ReLU: return true;
      case StepKind::Clamp: return s.lo >= 0;
      case StepKind::ClampChannels: return s.lo_t.ge(0).all().item<bool>();
      case StepKind::MaxPool:
      case StepKind::AvgPool:
        if (i == 0) return false;
        --i;
        continue;
      default: return false;
    }
  }
}


/// The per-channel clamp step that follows conv steps[i] (its activation where oneDNN's eltwise
/// post-ops cannot express it: ReLU6 and ReLU MobileNetV2 blocks after the RM operation), or null.
const Step* clamp_after(const std::vector<Step>& steps, size_t i) {
  return i + 1 < steps.size() && steps[i + 1].kind == StepKind::ClampChannels ? &steps[i + 1] : nullptr;
}

/// The step after conv steps[i] and its per-channel clamp.
size_t after(const std::vector<Step>& steps, size_t i) { return i + 1 + (clamp_after(steps, i) ? 1 : 0); }

/// What a conv's per-channel clamp does to its copy rows (`src[r] >= 0`): 0 passes them unchanged
/// ((-inf, inf)), 1 is a ReLU on every one of them ([0, inf)), -1 anything else (not a shortcut).
int copy_activation(const Step* clamp, const std::vector<int64_t>& src) {
  if (!clamp) return 0;
  const auto lo = clamp->lo_t.to(torch::kDouble).flatten(), hi = clamp->hi_t.to(torch::kDouble).flatten();
  const auto l = lo.accessor<double, 1>(), h = hi.accessor<double, 1>();
  int kind = -2;
  for (size_t r = 0; r < src.size(); ++r) {
    if (src[r] < 0) continue;
    const int k = !std::isinf(h[r]) || h[r] < 0 ? -1 : (std::isinf(l[r]) && l[r] < 0) ? 0 : l[r] == 0 ? 1 : -1;
    if (k < 0 || (kind != -2 && k != kind)) return -1;
    kind = k;
  }
  return kind == -2 ? 0 : kind;
}

/// After the copy rows went: the clamp of the kept rows, sliced; where it is now the same on every
/// channel it becomes the conv's post-op (ReLU, or hardtanh for ReLU6) and the clamp step goes
/// (returns true).
bool slice_clamp(Step& conv, Step& clamp, const std::vector<int64_t>& rows) {
  const Tensor r = index_of(rows);
  clamp.lo_t = clamp.lo_t.index_select(1, r).contiguous();
  clamp.hi_t = clamp.hi_t.index_select(1, r).contiguous();
  const auto lo = clamp.lo_t.to(torch::kDouble), hi = clamp.hi_t.to(torch::kDouble);
  clamp.name = clamp_channels_name(lo, hi);
  if (conv.attr != "none" || !(lo == lo.min()).all().item<bool>() || !(hi == hi.min()).all().item<bool>()) return false;
  return clamp_as_post_op(conv, lo.min().item<double>(), hi.min().item<double>());
}


}  // namespace

size_t find_dirac_shortcuts(std::vector<Step>& steps, std::vector<DiracShortcut>* found_out) {
  torch::NoGradGuard no_grad;
  size_t found = 0;
  std::vector<bool> dead(steps.size(), false);  // per-channel clamps that became post-ops
  for (size_t a = 0; a + 1 < steps.size(); ++a) {
    if (!eligible(steps[a]) || steps[a].groups != 1) continue;
    const ConvView va = view_of(steps[a]);
    // The run from A, with the x channels in `excluded` left computed (their copy rows in A as branch
    // rows): Found, None, or Retry where a grouped M has a group only partly made of copies (a copy
    // whose shortcut scale is <= 0, or one pruning kept while its group's others went: slicing the
    // conv drops whole groups), after adding that group's x channels to `excluded`.
    enum class Outcome { None, Found, Retry };
    std::vector<bool> excluded(steps[a].in, false);
    std::vector<size_t> middle;             // M steps
    std::vector<std::vector<int64_t>> keeps;  // per conv from A on: its kept (branch) output rows
    std::vector<std::vector<int64_t>> copy_maps;  // per conv from A on: its rows' x channels
    std::vector<int64_t> cur;
    bool relu_on_path = false;
    int64_t stride = 1;
    size_t b = 0;
    Tensor projection;  // a projection merge: [B.out, A.in] weights of the copies' x channels
    Tensor scale;       // an identity merge whose factors are not all 1: [B.out] per output
    const auto analyse = [&]() -> Outcome {
      auto lone_a = copy_rows(va);
      for (auto& c : lone_a.at)
        if (c >= 0 && excluded[c]) c = -1;
      const auto& src_a = lone_a.at;
      // cur[j]: the x channel that channel j of the current output copies (-1: a branch channel), and
      // fac[j] the positive factor it carries (the product of the copy weights on its path)
      cur = src_a;
      std::vector<double> fac = lone_a.factor;
      std::vector<bool> seen(steps[a].in, false);
      bool distinct = true;
      int64_t copies = 0;
      for (int64_t s : src_a)
        if (s >= 0) {
          distinct = distinct && !seen[s];
          seen[s] = true;
          ++copies;
        }
      const int act_a = copy_activation(clamp_after(steps, a), src_a);
      if (copies == 0 || copies == steps[a].out || !distinct || act_a < 0) return Outcome::None;
      middle.clear();
      keeps = {branch_rows(src_a)};
      copy_maps = {src_a};
      relu_on_path = steps[a].attr == "relu" || act_a == 1;
      stride = steps[a].stride;  // of the copies so far: channel j at (i, k) is x[c][stride * i][stride * k]
      size_t prev = a;
      b = after(steps, a);
      while (b < steps.size() && eligible(steps[b]) && steps[b].in == steps[prev].out) {
        const ConvView vb = view_of(steps[b]);
        const auto target = column_targets(vb);
        const auto single = single_weight_rows(vb);
        std::vector<int64_t> next(steps[b].out, -1);
        std::vector<double> next_fac(steps[b].out, 0.0);
        bool ok = true, all_pure = true;
        for (int64_t j = 0; j < steps[b].in; ++j) {
          if (cur[j] < 0) continue;
          const int64_t r = target.at[j];
          if (r < 0 || next[r] >= 0) {
            ok = false;
            break;
          }
          next[r] = cur[j];
          next_fac[r] = fac[j] * target.factor[j];
          all_pure = all_pure && single[r];
        }
        const auto keep_b = branch_rows(next);
        const size_t after_b = after(steps, b);
        const bool more = after_b < steps.size() && eligible(steps[after_b]);
        const int act_b = ok ? copy_activation(clamp_after(steps, b), next) : -1;
        const bool passes = ok && all_pure && act_b >= 0 && !keep_b.empty() && more;
        if (passes && !whole_groups(vb, next)) {  // the copies of partly-copy groups stay computed
          bool added = false;
          for (int64_t g = 0; g < vb.groups; ++g) {
            int64_t in_group = 0;
            for (int64_t r = g * vb.out_g(); r < (g + 1) * vb.out_g(); ++r) in_group += next[r] >= 0;
            if (in_group == 0 || (in_group == vb.out_g() && vb.in_g() == vb.out_g())) continue;
            for (int64_t r = g * vb.out_g(); r < (g + 1) * vb.out_g(); ++r)
              if (next[r] >= 0 && !excluded[next[r]]) excluded[next[r]] = added = true;
          }
          return added ? Outcome::Retry : Outcome::None;
        }
        if (passes) {
          // an M: copies pass, the branch goes on
          middle.push_back(b);
          keeps.push_back(keep_b);
          copy_maps.push_back(next);
          relu_on_path = relu_on_path || steps[b].attr == "relu" || act_b == 1;
          stride *= steps[b].stride;
          cur = next;
          fac = next_fac;
          prev = b;
          b = after_b;
          continue;
        }
        if (steps[b].groups != 1 || steps[b].stride != 1) break;
        // an identity merge: every output adds x's channel of the same index (times its factor) or
        // nothing (factor 0: a copy the pruning or a zero shortcut scale removed), at x's resolution
        bool identity = ok && stride == 1 && steps[b].out == steps[a].in;
        for (int64_t r = 0; r < steps[b].out && identity; ++r) identity = next[r] == r || next[r] < 0;
        if (identity) {
          bool unit = true;
          for (int64_t r = 0; r < steps[b].out; ++r) unit = unit && next[r] == r && std::abs(next_fac[r] - 1.0) <= vb.tol;
          if (!unit) scale = torch::tensor(next_fac, torch::kDouble);
          return Outcome::Found;
        }
        // a projection merge: the copies' columns have weights at the centre tap only, a 1x1 conv
        // of x at the copies' stride (an RM downsample block: [W2 | P padded to k x k])
        std::vector<int64_t> js, xs;  // the copy columns and the x channels they carry
        for (int64_t j = 0; j < steps[b].in; ++j)
          if (cur[j] >= 0) {
            js.push_back(j);
            xs.push_back(cur[j]);
          }
        std::vector<double> fs;  // their factors
        for (int64_t j : js) fs.push_back(fac[j]);
        // [O, copies, k*k], each column times its copy's factor
        const Tensor wc = vb.w.index_select(1, index_of(js)) * torch::tensor(fs, torch::kDouble).view({1, -1, 1});
        Tensor off_centre = wc.clone();
        off_centre.select(2, vb.center).zero_();
        if (off_centre.ne(0).any().item<bool>()) break;
        projection = torch::zeros({steps[b].out, steps[a].in}, torch::kDouble);
        projection.index_copy_(1, index_of(xs), wc.select(2, vb.center));
        return Outcome::Found;
      }
      return Outcome::None;
    };
    Outcome outcome = analyse();
    while (outcome == Outcome::Retry) outcome = analyse();
    if (outcome != Outcome::Found) continue;
    if (found_out) {
      DiracShortcut rec;
      rec.convs.push_back(steps[a].first);
      for (size_t m : middle) rec.convs.push_back(steps[m].first);
      rec.convs.push_back(steps[b].first);
      rec.copies = copy_maps;
      rec.merged = cur;
      rec.projection = projection.defined();
      if (scale.defined()) rec.scale = std::vector<double>(scale.data_ptr<double>(), scale.data_ptr<double>() + scale.numel());
      found_out->push_back(std::move(rec));
    }
    // rewrite: A and the Ms keep their branch rows, the Ms and B their branch columns
    const auto slice = [](Step& s, const std::vector<int64_t>* rows, const std::vector<int64_t>* cols) {
      if (rows) {
        const Tensor r = index_of(*rows);
        s.weight = s.weight.index_select(0, r).contiguous();
        if (s.bias.defined()) s.bias = s.bias.index_select(0, r).contiguous();
        s.copies = s.out - static_cast<int64_t>(rows->size());
        s.out = static_cast<int64_t>(rows->size());
      }
      if (cols && s.groups == 1) {
        s.weight = s.weight.index_select(1, index_of(*cols)).contiguous();
        s.in = static_cast<int64_t>(cols->size());
      } else if (cols) {  // whole groups go: the kept rows' weights keep their in-group columns
        const int64_t in_g = s.in / s.groups;
        s.in = static_cast<int64_t>(cols->size());
        s.groups = s.in / in_g;
      }
    };
    // the kept rows' per-channel clamp, sliced (a post-op of the conv where it became uniform)
    const auto slice_its_clamp = [&](size_t i, const std::vector<int64_t>& rows) {
      if (clamp_after(steps, i) && slice_clamp(steps[i], steps[i + 1], rows)) dead[i + 1] = true;
    };
    const auto rename = [](Step& s) {
      s.name = fmt::format("conv {}x{} s{} {}->{}{}{}", s.kernel, s.kernel, s.stride, s.in, s.out,
                           s.groups > 1 ? fmt::format(" g{}", s.groups) : "", act_name(s));
    };
    const int64_t x_channels = steps[a].in;
    const size_t a_first = steps[a].first;
    {
      Step& sa = steps[a];
      slice(sa, &keeps[0], nullptr);
      slice_its_clamp(a, keeps[0]);
      sa.keeps_input = true;
      rename(sa);
      sa.name += fmt::format(" (its {} Dirac copies of the input kept as a shortcut)", sa.copies);
    }
    for (size_t m = 0; m < middle.size(); ++m) {
      Step& sm = steps[middle[m]];
      slice(sm, &keeps[m + 1], &keeps[m]);
      slice_its_clamp(middle[m], keeps[m + 1]);
      rename(sm);
      sm.name += fmt::format(" ({} Dirac copies skipped)", sm.copies);
    }
    const std::string act = relu_on_path && !(a > 0 && nonnegative_output(steps, a - 1)) ? "relu" : "none";
    {
      Step& sb = steps[b];
      const int64_t out_channels = sb.out;
      slice(sb, nullptr, &keeps.back());
      sb.copies = out_channels;
      sb.shortcut_from = static_cast<int64_t>(a);
      sb.shortcut_act = act;
      if (scale.defined()) sb.shortcut_scale = scale.to(sb.weight.scalar_type()).view({1, -1, 1, 1}).contiguous();
      sb.name = fmt::format("conv {}x{} s{} {}->{} + the shortcut from layer {} ({}sum post-op{}){}", sb.kernel,
                            sb.kernel, sb.stride, sb.in, sb.out, a_first,
                            projection.defined() ? "projected, " : scale.defined() ? "scaled per channel, " : "",
                            act == "relu" && !projection.defined() ? ", ReLU on it first" : "", act_name(sb));
    }
    if (projection.defined()) {  // its 1x1 conv on the kept input, just before B (last: steps may move)
      Step p;
      p.kind = StepKind::Conv;
      p.first = steps[b].first;
      p.last = steps[b].last;
      p.in = x_channels;
      p.out = steps[b].out;
      p.kernel = 1;
      p.stride = stride;
      p.weight = projection.to(steps[b].weight.scalar_type()).reshape({p.out, p.in, 1, 1}).contiguous();
      p.on_kept = true;
      p.shortcut_act = act;
      p.name = fmt::format("conv 1x1 s{} {}->{} (the shortcut's projection, of the input of layer {}{})", p.stride,
                           p.in, p.out, a_first, act == "relu" ? ", ReLU on it first" : "");
      steps.insert(steps.begin() + static_cast<std::ptrdiff_t>(b), std::move(p));
      dead.insert(dead.begin() + static_cast<std::ptrdiff_t>(b), false);
      ++b;
    }
    ++found;
    a = b;
  }
  // drop the clamps that became post-ops; a merge conv's shortcut_from follows its step's new index
  std::vector<int64_t> new_index(steps.size(), -1);
  std::vector<Step> kept;
  for (size_t i = 0; i < steps.size(); ++i)
    if (!dead[i]) {
      new_index[i] = static_cast<int64_t>(kept.size());
      kept.push_back(std::move(steps[i]));
    }
  for (auto& s : kept)
    if (s.shortcut_from >= 0) s.shortcut_from = new_index[s.shortcut_from];
  steps = std::move(kept);
  return found;
}

}  // namespace detail

std::vector<DiracShortcut> dirac_shortcuts(const PlainNetImpl& net) {
  auto dtype = ir::dtype_device(net).first;
  if (dtype != torch::kDouble) dtype = torch::kFloat;
  auto steps = detail::compile_chain(net, dtype);
  std::vector<DiracShortcut> found;
  detail::find_dirac_shortcuts(steps, &found);
  return found;
}

int64_t executed_macs(const PlainNetImpl& net, int64_t input_size) {
  return executed_macs(net, dirac_shortcuts(net), input_size);
}

int64_t executed_macs(const PlainNetImpl& net, const std::vector<DiracShortcut>& shortcuts, int64_t input_size) {
  const auto& specs = net.specs();
  const size_t n = specs.size();
  const int64_t size = input_size > 0 ? input_size : default_input_size(net);
  const auto sides = output_sides(specs, size);
  const auto count = [](const std::vector<int64_t>& v) {
    return static_cast<int64_t>(std::count_if(v.begin(), v.end(), [](int64_t x) { return x >= 0; }));
  };
  // per conv layer: output rows and input columns not computed, and a projection's 1x1 conv
  std::vector<int64_t> free_rows(n, 0), free_cols(n, 0), extra(n, 0);
  for (const auto& sc : shortcuts) {
    TORCH_CHECK(sc.convs.size() >= 2 && sc.copies.size() + 1 == sc.convs.size(), "internal: a Dirac shortcut of ",
                sc.convs.size(), " convs and ", sc.copies.size(), " copy maps");
    for (size_t k = 0; k < sc.convs.size(); ++k) {
      const size_t l = sc.convs[k];
      TORCH_CHECK(l < n && specs[l].kind == LayerKind::Conv, "a Dirac shortcut names layer ", l,
                  ", not a conv of this network");
      if (k + 1 < sc.convs.size()) free_rows[l] = count(sc.copies[k]);
      if (k > 0 && specs[l].groups == 1) free_cols[l] = count(k + 1 < sc.convs.size() ? sc.copies[k - 1] : sc.merged);
    }
    const size_t b = sc.convs.back();
    if (sc.projection) extra[b] = sides[b] * sides[b] * specs[b].out_channels * specs[sc.convs[0]].in_channels;
  }
  int64_t macs = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto& s = specs[i];
    if (s.kind == LayerKind::Conv)
      macs += sides[i] * sides[i] * (s.out_channels - free_rows[i]) * ((s.in_channels - free_cols[i]) / s.groups) *
                  s.kernel * s.kernel + extra[i];
    else if (s.kind == LayerKind::Linear)
      macs += s.in_channels * s.out_channels;
    else if (s.kind == LayerKind::SE)
      macs += 2 * s.hidden * s.scaled;
  }
  return macs;
}

}  // namespace rmnet
