#include "rmnet/train/trainer.h"

#include "rmnet/ir/chain.h"
#include "rmnet/models/plain.h"

#include "../eval_mode_guard.h"

#include <chrono>
#include <cmath>

#include <fmt/format.h>
#include <optional>

#include <torch/torch.h>

namespace rmnet {

NonFiniteLoss::NonFiniteLoss(int64_t epoch_, int64_t step_, double loss)
    : std::runtime_error(fmt::format("loss became {} at epoch {}, step {}; stopping (the last checkpoint is kept)",
                                     loss, epoch_ + 1, step_)),
      epoch(epoch_),
      step(step_) {}

std::unique_ptr<torch::optim::SGD> make_sgd(ModelImpl& model, const TrainOptions& o) {
  const double lr = o.schedule().lr();
  auto sgd = [&](double wd) {
    return torch::optim::SGDOptions(lr).momentum(o.momentum()).nesterov(o.nesterov()).weight_decay(wd);
  };
  if (!o.no_decay_bn_bias()) return std::make_unique<torch::optim::SGD>(model.parameters(), sgd(o.weight_decay()));
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : model.parameters()) (p.dim() <= 1 ? no_decay : decay).push_back(p);
  auto opt = std::make_unique<torch::optim::SGD>(decay, sgd(o.weight_decay()));
  opt->add_param_group(torch::optim::OptimizerParamGroup(no_decay));
  // LibTorch 2.14 gives every group the optimizer's defaults whatever options the group carried
  // (checked: a group built with weight_decay 0 came out with the default), so set it here.
  static_cast<torch::optim::SGDOptions&>(opt->param_groups().back().options()).weight_decay(0.0);
  return opt;
}

namespace {

/// Number of samples whose label is among the top-k predictions, for k = 1 and 5.
std::pair<int64_t, int64_t> correct_top1_top5(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t k = std::min<int64_t>(5, logits.size(1));
  auto top = std::get<1>(logits.topk(k, 1));
  auto hit = top.eq(labels.view({-1, 1}));
  return {hit.select(1, 0).sum().item<int64_t>(), hit.any(1).sum().item<int64_t>()};
}

void set_lr(torch::optim::SGD& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
}

}  // namespace

void add_sparsity_subgradient(torch::nn::Module& model, double lambda) {
  torch::NoGradGuard no_grad;
  auto add = [&](torch::Tensor& w) {
    if (w.defined() && w.grad().defined()) w.mutable_grad().add_(torch::sign(w), lambda);
  };
  for (auto& m : model.modules()) {
    if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(m)) add(bn->weight);
    for (auto& p : m->named_parameters(false))
      if (p.key() == "shortcut_scale") add(p.value());
  }
}

torch::Tensor training_loss(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& teacher_logits,
                            const TrainOptions& o) {
  namespace F = torch::nn::functional;
  auto ce = F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing()));
  if (!teacher_logits.defined()) return ce;
  TORCH_CHECK(teacher_logits.sizes() == logits.sizes(), "the teacher's outputs have shape ", teacher_logits.sizes(),
              ", the trained network's ", logits.sizes(), ": the teacher must classify the same classes");
  const double t = o.distill_temperature(), a = o.distill_weight();
  auto log_p = F::log_softmax(logits.to(torch::kFloat) / t, 1);
  auto log_q = F::log_softmax(teacher_logits.to(torch::kFloat) / t, 1);
  // KL(q || p) per sample, averaged over the batch
  auto kl = (log_q.exp() * (log_q - log_p)).sum(1).mean();
  return (1.0 - a) * ce + a * t * t * kl;
}

namespace {

/// TrainOptions::keep_dirac: a plain network's Dirac rows (with their bias and the BN channels after
/// them) and centre-tap-only columns, restored after every optimizer step (so neither gradients,
/// weight decay, momentum nor BN's running statistics move them), and those BN channels normalising
/// with their running statistics in training mode too. Undone when it goes out of scope.
class DiracFreeze {
 public:
  explicit DiracFreeze(ModelImpl& model) : net_(dynamic_cast<PlainNetImpl*>(&model)) {
    if (!net_) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < net_->size(); ++i) {
      const auto& s = net_->spec(i);
      if (s.kind != LayerKind::Conv || s.kernel % 2 == 0) continue;
      auto conv = net_->layer_as<torch::nn::Conv2dImpl>(i);
      const auto& w = conv->weight;
      const auto d = ir::dirac_pattern(w, s.groups);
      const auto& rows = d.rows;  // with their bias and BN channels
      auto mask = rows.view({-1, 1, 1, 1}).expand_as(w).clone();
      // the outputs a lone (identity shortcut) column adds into: their BN channels stay as they are,
      // so the folded column stays exactly 1 (a moved BN would make it a diagonal projection)
      auto merged = torch::zeros_like(rows);
      if (s.groups == 1) {
        mask |= d.centre_cols.view({1, -1, 1, 1}).expand_as(w);  // (none for k = 1)
        if (d.lone_cols.any().item<bool>())
          merged = w.index_select(1, d.lone_cols.nonzero().flatten()).ne(0).flatten(1).any(1);
      }
      if (!mask.any().item<bool>()) continue;
      keep(conv->weight, mask);
      if (conv->bias.defined() && conv->bias.numel() > 0) keep(conv->bias, rows);
      const auto bn_rows = rows | merged;
      if (i + 1 < net_->size() && net_->spec(i + 1).kind == LayerKind::BatchNorm && bn_rows.any().item<bool>()) {
        auto bn = net_->layer_as<torch::nn::BatchNorm2dImpl>(i + 1);
        for (auto* t : {&bn->weight, &bn->bias, &bn->running_mean, &bn->running_var}) keep(*t, bn_rows);
        net_->set_frozen_bn_channels(i + 1, bn_rows.nonzero().flatten());
        bns_.push_back(i + 1);
      }
    }
  }
  ~DiracFreeze() {
    for (size_t i : bns_) net_->set_frozen_bn_channels(i, torch::Tensor());
  }
  DiracFreeze(const DiracFreeze&) = delete;
  DiracFreeze& operator=(const DiracFreeze&) = delete;

  /// The kept values back (after an optimizer step).
  void restore() {
    torch::NoGradGuard no_grad;
    for (auto& k : kept_) k.t.copy_(torch::where(k.mask, k.saved, k.t));
  }

 private:
  struct Kept {
    torch::Tensor t, mask, saved;
  };
  void keep(torch::Tensor& t, const torch::Tensor& mask) { kept_.push_back({t, mask.to(t.device()), t.detach().clone()}); }
  PlainNetImpl* net_ = nullptr;
  std::vector<Kept> kept_;
  std::vector<size_t> bns_;
};

}  // namespace

EpochStats train_epoch(ModelImpl& model, DataLoader& loader, torch::optim::SGD& optimizer, const TrainOptions& o,
                       TrainState& state, const ProgressFn& progress, const std::function<bool()>& stop) {
  std::optional<DiracFreeze> freeze;
  if (o.keep_dirac()) freeze.emplace(model);
  model.train();
  EpochStats s;
  const auto t0 = std::chrono::steady_clock::now();
  loader.start_epoch(state.epoch);
  const size_t n = loader.batches_per_epoch();
  double loss_sum = 0;
  int64_t c1 = 0, c5 = 0;
  for (int64_t skip = 0; skip < state.batch_in_epoch; ++skip) loader.next();  // resume mid-epoch
  Distributed* dist = o.distributed().get();
  const bool half = o.amp_dtype() == torch::kHalf;
  auto scaler = o.loss_scaler();
  if (half && !scaler) scaler = std::make_shared<LossScaler>();
  const auto params = model.parameters();
  bool agreed_stop = false;
  if (o.teacher()) {
    TORCH_CHECK(o.teacher().get() != &model, "the teacher must be another network than the one trained");
    TORCH_CHECK(o.distill_weight() >= 0.0 && o.distill_weight() <= 1.0, "distill_weight must be in [0, 1] (got ",
                o.distill_weight(), ")");
    TORCH_CHECK(o.distill_temperature() > 0.0 && std::isfinite(o.distill_temperature()),
                "distill_temperature must be a positive number (got ", o.distill_temperature(), ")");
    o.teacher()->eval();
  }
  const auto teacher_logits = [&](const torch::Tensor& x) -> torch::Tensor {
    if (!o.teacher()) return {};
    torch::NoGradGuard no_grad;
    return o.teacher()->forward(x).detach();
  };
  for (size_t b = static_cast<size_t>(state.batch_in_epoch); b < n; ++b) {
    // Data parallel: every rank stops at the same batch, agreed through the previous step's
    // all-reduce (a signal may reach only some ranks, or reach them at different batches).
    if (dist ? agreed_stop : (stop && stop())) break;
    auto batch = loader.next();
    TORCH_CHECK(batch, "loader ended early at batch ", b, " of ", n);
    const double lr = learning_rate(o.schedule(), state.global_step);
    set_lr(optimizer, lr);
    auto x = batch->images.to(o.device()), y = batch->labels.to(o.device());
    if (o.channels_last()) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    optimizer.zero_grad();
    torch::Tensor logits, loss;
    {
      AutocastGuard autocast(o.device(), o.amp_dtype());
      logits = model.forward(x);
      loss = training_loss(logits, y, teacher_logits(x), o);
    }
    const int64_t local_bs = y.size(0);
    auto [k1, k5] = correct_top1_top5(logits.detach(), y);
    double lv = loss.item<double>();
    int64_t bs = local_bs;
    if (!dist && !std::isfinite(lv)) throw NonFiniteLoss(state.epoch, state.global_step, lv);
    if (half) {
      (loss * scaler->scale).backward();
    } else {
      loss.backward();
    }
    if (dist) {
      dist->average_gradients(params);
      auto st = torch::tensor({lv * static_cast<double>(local_bs), static_cast<double>(local_bs),
                               static_cast<double>(k1), static_cast<double>(k5), stop && stop() ? 1.0 : 0.0},
                              torch::kDouble);
      dist->sum(st);
      auto a = st.accessor<double, 1>();
      bs = std::llround(a[1]);
      lv = a[0] / a[1];
      k1 = std::llround(a[2]);
      k5 = std::llround(a[3]);
      agreed_stop = a[4] > 0;
      if (!std::isfinite(lv)) throw NonFiniteLoss(state.epoch, state.global_step, lv);  // on every rank
    }
    bool do_step = true;
    if (half) {
      do_step = scaler->unscale_and_check(params);  // gradients are identical on all ranks here
      scaler->update(do_step);
    }
    if (do_step && o.sparsity() > 0) add_sparsity_subgradient(model, o.sparsity());  // slimming L1 (after unscaling)
    if (do_step) optimizer.step();
    if (freeze) freeze->restore();
    loss_sum += lv * static_cast<double>(bs);
    c1 += k1;
    c5 += k5;
    s.samples += bs;
    s.loss = loss_sum / static_cast<double>(s.samples);
    s.top1 = static_cast<double>(c1) / static_cast<double>(s.samples);
    s.top5 = static_cast<double>(c5) / static_cast<double>(s.samples);
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++state.global_step;
    ++state.batch_in_epoch;
    if (progress) progress(b + 1, n, s, lr);
  }
  if (state.batch_in_epoch >= static_cast<int64_t>(n)) {
    ++state.epoch;
    state.batch_in_epoch = 0;
  }
  return s;
}


EpochStats evaluate(ModelImpl& model, DataLoader& loader, torch::Device device) {
  detail::EvalModeGuard guard(model);
  torch::NoGradGuard no_grad;
  EpochStats s;
  const auto t0 = std::chrono::steady_clock::now();
  loader.start_epoch(0);
  double loss_sum = 0;
  int64_t c1 = 0, c5 = 0;
  while (auto batch = loader.next()) {
    auto y = batch->labels.to(device);
    auto logits = model.forward(batch->images.to(device));
    loss_sum += torch::nn::functional::cross_entropy(logits, y).item<double>() * static_cast<double>(y.size(0));
    auto [k1, k5] = correct_top1_top5(logits, y);
    c1 += k1;
    c5 += k5;
    s.samples += y.size(0);
  }
  if (s.samples > 0) {
    s.loss = loss_sum / static_cast<double>(s.samples);
    s.top1 = static_cast<double>(c1) / static_cast<double>(s.samples);
    s.top5 = static_cast<double>(c5) / static_cast<double>(s.samples);
  }
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

EpochStats all_reduce_stats(const EpochStats& l, Distributed& group) {
  const double n = static_cast<double>(l.samples);
  auto t = torch::tensor({l.loss * n, n, std::round(l.top1 * n), std::round(l.top5 * n), l.seconds}, torch::kDouble);
  group.sum(t);
  auto a = t.accessor<double, 1>();
  EpochStats g;
  g.samples = std::llround(a[1]);
  if (g.samples > 0) {
    g.loss = a[0] / a[1];
    g.top1 = a[2] / a[1];
    g.top5 = a[3] / a[1];
  }
  g.seconds = a[4] / group.world_size();
  return g;
}

torch::Tensor predict(ModelImpl& model, DataLoader& loader, torch::Device device) {
  detail::EvalModeGuard guard(model);
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  loader.start_epoch(0);
  while (auto batch = loader.next()) out.push_back(model.forward(batch->images.to(device)).argmax(1).cpu());
  return out.empty() ? torch::empty({0}, torch::kLong) : torch::cat(out);
}

}  // namespace rmnet
