# check_includes.cmake: the layering rule of docs/architecture.md, checked on every build
# (cmake -P scripts/check_includes.cmake -DROOT=<source dir> [-DSTAMP=<file>]).
# Every quoted include is written from the repository root ("stream/ring.h": no "../", no bare
# "ring.h"), names a file that exists, and never runs up a layer:
#   base < kernels < comm < stream < engine < apps, tests (apps and tests see every layer).
# The compiler enforces the last rule too (each layer's library sees only its own and the lower
# layers' headers); this check also covers headers no source of their layer includes, and says
# which rule a line breaks.
set(layers base kernels comm stream engine apps tests)
set(fails "")
foreach(layer ${layers})
  file(GLOB_RECURSE files ${ROOT}/${layer}/*.c ${ROOT}/${layer}/*.h ${ROOT}/${layer}/*.cu ${ROOT}/${layer}/*.cuh)
  list(FIND layers ${layer} mine)
  foreach(f ${files})
    file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    file(RELATIVE_PATH rel ${ROOT} ${f})
    foreach(line ${lines})
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]*)\".*$" "\\1" inc "${line}")
      string(REGEX MATCH "^[a-z_]+" top "${inc}")
      list(FIND layers "${top}" theirs)
      if(inc MATCHES "\\.\\.")
        list(APPEND fails "${rel}: #include \"${inc}\" climbs with two dots, write it from the repository root")
      elseif(theirs LESS 0 OR NOT inc MATCHES "/")
        list(APPEND fails "${rel}: #include \"${inc}\" is not written from the repository root (base/, kernels/, comm/, stream/, engine/, apps/, tests/)")
      elseif(NOT EXISTS ${ROOT}/${inc})
        list(APPEND fails "${rel}: #include \"${inc}\" names no file")
      elseif(theirs GREATER mine AND NOT layer STREQUAL "tests")
        list(APPEND fails "${rel}: #include \"${inc}\" runs up from ${layer}/ to ${top}/ (layers: base < kernels < comm < stream < engine < apps)")
      endif()
    endforeach()
  endforeach()
endforeach()
if(fails)
  list(JOIN fails "\n  " msg)
  message(FATAL_ERROR "include rules broken (docs/architecture.md, \"Layers\"):\n  ${msg}")
endif()
if(STAMP)
  file(TOUCH ${STAMP})
endif()
