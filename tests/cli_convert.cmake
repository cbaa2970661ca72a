# The CLI end to end: list, init, info, convert (both downsample types, BN kept and fused).
include(${CMAKE_CURRENT_LIST_DIR}/cli_common.cmake)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

rmnet_run(0 out list)
expect_contains("${out}" "resnet152")
expect_contains("${out}" "mobilenet_v2")
rmnet_run(0 out info --arch resnet18 --num-classes 10)
expect_contains("${out}" "parameters: 11181642")

rmnet_run(0 out --threads 1 init --arch resnet18_cifar --num-classes 10 --in-channels 1 --seed 3 --random-bn --track-stats
          --out ${WORK}/r18.rmnet)
rmnet_run(0 out convert --model ${WORK}/r18.rmnet --out ${WORK}/r18_plain.rmnet)
expect_contains("${out}" "equivalent")
rmnet_run(0 out convert --model ${WORK}/r18.rmnet --out ${WORK}/r18_plain_bn.rmnet --keep-bn --downsample 1)
expect_contains("${out}" "BN kept")
rmnet_run(0 out info --model ${WORK}/r18_plain.rmnet --input-size 28)
expect_contains("${out}" "family plain")
expect_contains("${out}" "source_arch: resnet18_cifar")
expect_contains("${out}" "[1, 10]")
# a plain model converts again (fold/fuse passes only) and stays equivalent
rmnet_run(0 out convert --model ${WORK}/r18_plain_bn.rmnet --out ${WORK}/r18_again.rmnet)
expect_contains("${out}" "equivalent")

rmnet_run(0 out init --arch mobilenet_v2_cifar --num-classes 10 --random-bn --out ${WORK}/mb.rmnet)
rmnet_run(0 out convert --model ${WORK}/mb.rmnet --out ${WORK}/mb_v1.rmnet --fuse-pointwise always)
expect_contains("${out}" "equivalent")

# TOML configs (CLI11 --config): the finetune recipe keeps BN.
rmnet_run(0 out --config ${CMAKE_CURRENT_LIST_DIR}/../configs/convert-finetune.toml convert
          --model ${WORK}/r18.rmnet --out ${WORK}/r18_cfg.rmnet)
expect_contains("${out}" "BN kept")
