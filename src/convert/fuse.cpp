// The PlainNet -> PlainNet forms of the chain passes (ir/passes.h).
#include "rmnet/convert/fuse.h"

#include <torch/torch.h>

#include "rmnet/ir/chain.h"

namespace rmnet {

namespace {

PlainNet run_pass(const PlainNetImpl& src, const ir::Pass& pass) {
  auto [dtype, device] = ir::dtype_device(src);
  ir::WorkDtypeGuard work(dtype);
  auto net = pass.run(ir::Chain::from(src)).build(src.options(), dtype, device);
  net->metadata() = src.metadata();
  return net;
}

}  // namespace

PlainNet fold_batchnorm(const PlainNetImpl& net) { return run_pass(net, ir::fold_batchnorm_pass()); }

PlainNet fuse_pointwise(const PlainNetImpl& net, PointwiseFusion policy) {
  return run_pass(net, ir::fuse_pointwise_pass(policy));
}

PlainNet simplify_activations(const PlainNetImpl& net) { return run_pass(net, ir::simplify_activations_pass()); }

}  // namespace rmnet
