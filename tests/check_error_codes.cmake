# Every Error the library, the CLI and the Python module throw names its
# ErrorCode (issue 14): fails listing each throw whose first argument is not a
# code. Run as cmake -DSOURCE_DIR=... -P check_error_codes.cmake.
file(GLOB_RECURSE sources
  ${SOURCE_DIR}/src/*.cpp ${SOURCE_DIR}/src/*.hpp
  ${SOURCE_DIR}/apps/*.cpp ${SOURCE_DIR}/apps/*.hpp ${SOURCE_DIR}/python/*.cpp)
set(uncoded "")
foreach(source IN LISTS sources)
  file(READ ${source} text)
  string(REGEX MATCHALL "throw[ ]+(bitinc::)?(Error|Stopped)\\([ \t\r\n]*[A-Za-z_:.]*" throws "${text}")
  foreach(throw IN LISTS throws)
    # A code: ErrorCode::name, or a caught error's or a failure's code.
    if(NOT throw MATCHES "(ErrorCode::[a-z_]+|[a-z_.]*code)$")
      string(REGEX REPLACE "[ \t\r\n]+" " " throw "${throw}")
      list(APPEND uncoded "${source}: ${throw}")
    endif()
  endforeach()
endforeach()
if(uncoded)
  list(JOIN uncoded "\n" listing)
  message(FATAL_ERROR "throws without an ErrorCode:\n${listing}")
endif()
