// fit: the epoch loop around train_epoch and evaluate, with resume, checkpoints, the metrics log,
// the best model, a stop request and the NaN stop.
#include "rmnet/train/fit.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "rmnet/io/model_file.h"
#include "rmnet/train/amp.h"
#include "rmnet/train/checkpoint.h"

namespace rmnet {
namespace fs = std::filesystem;

namespace {

/// Copies the checkpoint's weights into `model` (same architecture, every tensor by name).
void restore_weights(ModelImpl& model, const ModelImpl& saved, const std::string& path) {
  TORCH_CHECK(saved.options().arch() == model.options().arch(), "checkpoint '", path, "' holds a ",
              saved.options().arch(), " model, not ", model.options().arch());
  auto dst = model.named_parameters();
  for (const auto& b : model.named_buffers()) dst.insert(b.key(), b.value());
  auto src = saved.named_parameters();
  for (const auto& b : saved.named_buffers()) src.insert(b.key(), b.value());
  TORCH_CHECK(src.size() == dst.size(), "checkpoint '", path, "' holds ", src.size(), " tensors, the model has ",
              dst.size());
  torch::NoGradGuard no_grad;
  for (const auto& s : src) {
    auto* d = dst.find(s.key());
    TORCH_CHECK(d, "checkpoint '", path, "' holds a tensor '", s.key(), "' the model does not have");
    TORCH_CHECK(d->sizes() == s.value().sizes(), "checkpoint '", path, "': tensor '", s.key(), "' has shape ",
                s.value().sizes(), ", the model's is ", d->sizes());
    d->copy_(s.value());
  }
  model.metadata() = saved.metadata();
}

void append_line(const std::string& path, const std::string& line) {
  std::ofstream f(path, std::ios::app);
  TORCH_CHECK(f, "cannot append to '", path, "'");
  f << line << "\n";
}

std::string amp_name(torch::ScalarType t) {
  return t == torch::kHalf ? "fp16" : t == torch::kBFloat16 ? "bf16" : "off";
}

/// The caller's description of the run plus fit's settings (the caller's keys win).
nlohmann::json run_config(const FitOptions& o, const TrainOptions& t, int world) {
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(o.config());
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "fit: the config option is not JSON (", e.what(), ")");
  }
  TORCH_CHECK(cfg.is_object(), "fit: the config option must be a JSON object (got ", o.config(), ")");
  const auto& s = t.schedule();
  const nlohmann::json mine = {
      {"epochs", o.epochs()},         {"batch_size", o.batch_size()},   {"seed", o.seed()},
      {"lr", s.lr()},                 {"schedule", s.kind()},           {"milestones", s.milestones()},
      {"step_size", s.step_size()},   {"gamma", s.gamma()},             {"warmup_epochs", s.warmup_epochs()},
      {"momentum", t.momentum()},     {"nesterov", t.nesterov()},       {"weight_decay", t.weight_decay()},
      {"no_decay_bn_bias", t.no_decay_bn_bias()}, {"label_smoothing", t.label_smoothing()},
      {"sparsity", t.sparsity()},     {"device", t.device().str()},     {"amp", amp_name(t.amp_dtype())},
      {"channels_last", t.channels_last()}, {"world_size", world}};
  for (auto it = mine.begin(); it != mine.end(); ++it)
    if (!cfg.contains(it.key())) cfg[it.key()] = it.value();
  return cfg;
}

Transform or_default(const Transform& t, int64_t channels) {
  if (t) return t;
  return normalize(Normalization{std::vector<double>(channels, 0.5), std::vector<double>(channels, 0.5)});
}

}  // namespace

FitResult fit(ModelImpl& model, const DatasetPtr& train_data, const DatasetPtr& test_data, const FitOptions& o) {
  TORCH_CHECK(train_data && test_data, "fit: a training and a test data set are required");
  TORCH_CHECK(o.epochs() >= 1, "fit: epochs must be at least 1 (got ", o.epochs(), ")");
  TrainOptions to = o.train();
  const auto dist = to.distributed();
  const int world = dist ? dist->world_size() : 1, rank = dist ? dist->rank() : 0;
  const bool main_rank = rank == 0;  // only rank 0 writes files
  TORCH_CHECK(o.batch_size() >= 1 && o.batch_size() % world == 0, "fit: the batch size ", o.batch_size(),
              " is the global batch; it must be a positive multiple of the world size ", world);
  TORCH_CHECK(model.options().in_channels() == train_data->channels(), "the model takes ",
              model.options().in_channels(), " input channels, the training data has ", train_data->channels());
  TORCH_CHECK(model.options().num_classes() == train_data->num_classes(), "the model has ",
              model.options().num_classes(), " classes, the training data has ", train_data->num_classes());

  FitResult result;
  TrainState& state = result.state;
  double& best = result.best_top1;
  if (!o.resume().empty()) {
    auto c = load_checkpoint(o.resume());  // restores the CPU RNG too
    restore_weights(model, *c.model, o.resume());
    state = c.state;
    best = c.best_top1;
  }
  // Each rank reads its strided shard of the epoch's permutation with batch / world samples per
  // step: together the ranks' batches are exactly the single-process batch.
  DataLoader train_loader(train_data, or_default(o.train_transform(), train_data->channels()),
                          LoaderOptions().batch_size(o.batch_size() / world).shuffle(true).drop_last(true)
                              .workers(o.workers()).seed(o.seed()).shard(rank).num_shards(world));
  DataLoader test_loader(test_data, or_default(o.test_transform(), test_data->channels()),
                         LoaderOptions().batch_size(o.test_batch_size()).shuffle(false).workers(o.workers())
                             .shard(rank).num_shards(world));
  model.to(to.device());
  if (to.channels_last()) to_channels_last(model);
  if (dist) dist->broadcast_module(model);  // every rank starts from rank 0's weights
  if (to.amp_dtype() == torch::kHalf && !to.loss_scaler()) to.loss_scaler(std::make_shared<LossScaler>());
  const auto steps = static_cast<int64_t>(std::max<size_t>(1, train_loader.batches_per_epoch()));
  to.schedule(to.schedule().epochs(o.epochs()).steps_per_epoch(steps));
  learning_rate(to.schedule(), 0);  // validates the schedule before any work
  auto optimizer = make_sgd(model, to);
  if (!o.resume().empty()) load_optimizer_state(o.resume(), *optimizer);  // every rank reads it

  const std::string config = run_config(o, to, world).dump();
  const bool write = main_rank && !o.out().empty();
  const fs::path out(o.out());
  if (write) {
    fs::create_directories(out);
    write_file_atomic((out / "config.json").string(), nlohmann::json::parse(config).dump(2) + "\n");
  }
  const std::string ckpt_path = o.out().empty() ? "" : (out / "checkpoint.ckpt").string();
  auto save_ckpt = [&] {
    if (write) save_checkpoint(ckpt_path, model, *optimizer, state, best, config);
    result.checkpoint = ckpt_path;
  };
  if (o.on_begin())
    o.on_begin()(FitPlan{steps, static_cast<int64_t>(train_loader.samples_per_epoch()) * world, state, best});

  const auto stop_requested = [&] { return o.stop() && o.stop()(); };
  while (state.epoch < o.epochs()) {
    const int64_t epoch = state.epoch;
    if (o.on_epoch_begin()) o.on_epoch_begin()(epoch);
    EpochRecord rec;
    rec.epoch = epoch + 1;
    rec.train = train_epoch(model, train_loader, *optimizer, to, state, o.on_batch(), stop_requested);
    result.train_seconds += rec.train.seconds;
    // Ranks agree on stopping (train_epoch shares the request), so all of them are here together.
    if (stop_requested() || (dist && state.batch_in_epoch != 0)) {
      if (dist) dist->average_buffers(model);
      save_ckpt();
      result.stopped = true;
      return result;
    }
    if (dist) dist->average_buffers(model);  // BN statistics: the mean over ranks, identical everywhere
    rec.test = evaluate(model, test_loader, to.device());
    if (dist) rec.test = all_reduce_stats(rec.test, *dist);  // each rank evaluated its shard of the test set
    rec.improved = rec.test.top1 > best;
    best = std::max(best, rec.test.top1);
    rec.lr = learning_rate(to.schedule(), std::max<int64_t>(0, state.global_step - 1));
    if (rec.improved && write) save_model(model, (out / "best.rmnet").string());
    save_ckpt();
    if (write) {
      const nlohmann::json line = {{"epoch", rec.epoch},
                                   {"train_loss", rec.train.loss},
                                   {"train_top1", rec.train.top1},
                                   {"test_loss", rec.test.loss},
                                   {"test_top1", rec.test.top1},
                                   {"test_top5", rec.test.top5},
                                   {"lr", rec.lr},
                                   {"train_seconds", rec.train.seconds},
                                   {"train_images_per_second", rec.train.images_per_second()}};
      append_line((out / "metrics.jsonl").string(), line.dump());
    }
    result.epochs.push_back(rec);
    if (o.on_epoch()) o.on_epoch()(rec);
  }
  if (write) {
    save_model(model, (out / "final.rmnet").string());
    const nlohmann::json summary = {{"train_seconds", result.train_seconds}, {"best_test_top1", best},
                                    {"epochs", o.epochs()}, {"world_size", world}};
    write_file_atomic((out / "train_summary.json").string(), summary.dump(2) + "\n");
  }
  return result;
}

}  // namespace rmnet
