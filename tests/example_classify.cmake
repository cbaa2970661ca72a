# Builds examples/classify against the install tree and runs it on a model and a PPM image.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${RMNET} init --arch resnet20 --num-classes 3 --random-bn --out ${WORK}/m.rmnet
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "rmnet init failed")
endif()
# a model without preprocessing metadata: the example must say so
execute_process(COMMAND ${RMNET} convert --model ${WORK}/m.rmnet --out ${WORK}/plain.rmnet RESULT_VARIABLE rc)
set(ppm "P3\n4 3\n255\n")
foreach(i RANGE 11)
  string(APPEND ppm "255 0 0\n")
endforeach()
file(WRITE ${WORK}/red.ppm "${ppm}")
file(WRITE ${WORK}/labels.txt "cat\ndog\nbird\n")
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${WORK}/build -G ${GENERATOR}
                        -DCMAKE_PREFIX_PATH=${PREFIX} -DTorch_DIR=${TORCH_DIR} -DCMAKE_BUILD_TYPE=Release
                        -DTORCH_CUDA_ARCH_LIST=9.0
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the example failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the example failed")
endif()
execute_process(COMMAND ${WORK}/build/classify ${WORK}/plain.rmnet ${WORK}/red.ppm
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "stores no preprocessing")
  message(FATAL_ERROR "expected a clear error for a model without preprocessing, got (${rc}): ${out}${err}")
endif()

# a trained model carries its preprocessing; the converted plain network inherits it
execute_process(COMMAND ${RMNET} train --arch resnet8 --dataset fashion-mnist --epochs 1 --max-train-samples 64
                        --batch-size 32 --workers 1 --out ${WORK}/run RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "rmnet train failed")
endif()
execute_process(COMMAND ${RMNET} convert --model ${WORK}/run/final.rmnet --out ${WORK}/fm_plain.rmnet
                RESULT_VARIABLE rc OUTPUT_QUIET)
file(WRITE ${WORK}/fm_labels.txt "T-shirt\nTrouser\nPullover\nDress\nCoat\nSandal\nShirt\nSneaker\nBag\nBoot\n")
execute_process(COMMAND ${WORK}/build/classify ${WORK}/fm_plain.rmnet --labels ${WORK}/fm_labels.txt --top 3
                        ${WORK}/red.ppm ${WORK}/red.ppm
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "classify failed (${rc}): ${out}${err}")
endif()
string(REGEX MATCHALL "red.ppm:" lines "${out}")
list(LENGTH lines n)
if(NOT n EQUAL 2)
  message(FATAL_ERROR "expected two result lines, got: ${out}")
endif()
execute_process(COMMAND ${WORK}/build/classify ${WORK}/fm_plain.rmnet ${WORK}/labels.txt
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "cannot decode")
  message(FATAL_ERROR "expected a decode error naming the file, got (${rc}): ${out}${err}")
endif()
message(STATUS "classify output ok")
