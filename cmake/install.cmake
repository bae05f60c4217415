# cmake --install: the public headers, each component's static library,
# lib/cmake/bitinc (find_package(bitinc COMPONENTS decode ...)) and a
# pkg-config file per component (bitinc-decode.pc, ...).
include(CMakePackageConfigHelpers)

set(BITINC_CONFIG_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/bitinc)
set(BITINC_COMPONENT_TARGETS "")
foreach(component IN LISTS BITINC_COMPONENTS)
  list(APPEND BITINC_COMPONENT_TARGETS bitinc_${component})
endforeach()

# The headers by audience: an installation carries those of the components
# built, so a decode-only (device) install has the device's headers alone
# (bitinc/device.hpp gathers them) and nothing that would not link.
# progressive.hpp (ProgressiveModel over a ByteSource is in decode) takes
# engine.hpp and fetch.hpp (FetchOptions) along: declarations only. The
# server's header (server.hpp) and net.hpp, the umbrella over fetch.hpp and
# server.hpp, are the lab's.
set(BITINC_HEADERS_decode assembler.hpp bitinc.h byte_source.hpp codec.hpp decoder.hpp device.hpp
    engine.hpp error.hpp fetch.hpp ladder.hpp manifest.hpp model.hpp package_reader.hpp
    progressive.hpp version.hpp)
set(BITINC_HEADERS_fetch trust.hpp)
set(BITINC_HEADERS_runtime "")
set(BITINC_HEADERS_encode accuracy.hpp calibration.hpp dataset.hpp pack.hpp package.hpp
    producer.hpp)
set(BITINC_HEADERS_lab bitinc.hpp coder.hpp coder_benchmark.hpp evaluation.hpp inputs.hpp
    lab.hpp net.hpp server.hpp stream.hpp)
file(GLOB bitinc_public_headers RELATIVE ${PROJECT_SOURCE_DIR}/include/bitinc
     ${PROJECT_SOURCE_DIR}/include/bitinc/*.h ${PROJECT_SOURCE_DIR}/include/bitinc/*.hpp)
set(bitinc_listed_headers "")
foreach(component decode fetch runtime encode lab)
  list(APPEND bitinc_listed_headers ${BITINC_HEADERS_${component}})
endforeach()
foreach(header IN LISTS bitinc_public_headers)
  if(NOT header IN_LIST bitinc_listed_headers)
    message(FATAL_ERROR "include/bitinc/${header} belongs to no component (cmake/install.cmake)")
  endif()
endforeach()
foreach(component IN LISTS BITINC_COMPONENTS)
  if(BITINC_HEADERS_${component})
    list(TRANSFORM BITINC_HEADERS_${component} PREPEND include/bitinc/ OUTPUT_VARIABLE headers)
    install(FILES ${headers} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/bitinc)
  endif()
endforeach()
install(TARGETS ${BITINC_COMPONENT_TARGETS} bitinc
  EXPORT bitincTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET bitinc_cli)
  install(TARGETS bitinc_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

install(EXPORT bitincTargets NAMESPACE bitinc:: DESTINATION ${BITINC_CONFIG_DIR})
configure_package_config_file(cmake/bitincConfig.cmake.in
  ${PROJECT_BINARY_DIR}/bitincConfig.cmake INSTALL_DESTINATION ${BITINC_CONFIG_DIR})
# 0.x: a minor version may change the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/bitincConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/bitincConfig.cmake ${PROJECT_BINARY_DIR}/bitincConfigVersion.cmake
  DESTINATION ${BITINC_CONFIG_DIR})

# The .pc files find the prefix from their own place, so that
# `cmake --install --prefix` anywhere gives working files. The libraries
# are static: their dependencies go in Requires and Libs, not the
# .private fields a shared library would use.
set(BITINC_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
file(RELATIVE_PATH BITINC_PC_TO_PREFIX /prefix/${BITINC_PC_DIR} /prefix)
string(REGEX REPLACE "/$" "" BITINC_PC_TO_PREFIX "${BITINC_PC_TO_PREFIX}")
foreach(component IN LISTS BITINC_COMPONENTS)
  set(BITINC_PC_COMPONENT ${component})
  set(BITINC_PC_REQUIRES ${bitinc_pc_requires_${component}})
  set(BITINC_PC_LIBS ${bitinc_pc_libs_${component}})
  configure_file(cmake/bitinc.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/bitinc-${component}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/bitinc-${component}.pc DESTINATION ${BITINC_PC_DIR})
endforeach()
