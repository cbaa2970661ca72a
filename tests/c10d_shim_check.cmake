# The Gloo stand-ins of src/train/c10d_shim/ (see ARCHITECTURE.md, "c10d") must not reach the
# binary: distributed.cpp's object may define no symbol that names a Gloo type or one of the
# ProcessGroupGloo classes whose layout depends on Gloo's (GlooStore derives from Gloo's Store;
# the work classes hold Gloo objects). Its only Gloo-related symbols are references to LibTorch's
# exported functions and intrusive_ptr helpers of ProcessGroupGloo::Options (whose layout holds
# Gloo devices by shared_ptr only).
execute_process(COMMAND ${NM} -C --defined-only ${OBJECT} OUTPUT_VARIABLE syms RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nm ${OBJECT} failed (${rc})")
endif()
string(REPLACE "\n" ";" lines "${syms}")
set(bad "")
foreach(l IN LISTS lines)
  if(l MATCHES "gloo::|GlooStore|ProcessGroupGloo::(AsyncWork|SendWork|RecvWork)|vtable for c10d::ProcessGroupGloo|typeinfo for c10d::ProcessGroupGloo")
    string(APPEND bad "\n  ${l}")
  endif()
endforeach()
if(bad)
  message(FATAL_ERROR "${OBJECT} defines code from the Gloo stand-in layouts:${bad}")
endif()
message(STATUS "no Gloo-layout code in ${OBJECT}")
