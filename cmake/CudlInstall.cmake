# CudlInstall.cmake — installs libcudl.so (SONAME libcudl.so.0), the public headers, the CMake
# package (cudlConfig.cmake, version file, exported cudl::cudl) and cudl.pc for pkg-config.
include(CMakePackageConfigHelpers)

set(CUDL_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/cudl CACHE STRING "Where cudlConfig.cmake is installed")

# Only the public API leaves the library: cudl:: symbols with default visibility (CUDL_API).
# Template instantiations of the standard library that the compiler emits as weak symbols stay
# local, so consumers never bind to cudl's copies.
target_link_options(cudl PRIVATE -Wl,--version-script=${CMAKE_CURRENT_LIST_DIR}/cudl.map)
set_property(TARGET cudl APPEND PROPERTY LINK_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/cudl.map)
# The installed library finds cuDNN/cuBLAS where it was linked against them (non-system paths).
set_target_properties(cudl PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)

install(TARGETS cudl EXPORT cudlTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/include/cudl DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp")
install(EXPORT cudlTargets NAMESPACE cudl:: DESTINATION ${CUDL_INSTALL_CMAKEDIR})

set(CUDL_CONFIG_WITH_CUDA ${CUDL_WITH_CUDA})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/cudlConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/cudlConfig.cmake
                              INSTALL_DESTINATION ${CUDL_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/cudlConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/cudlConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/cudlConfigVersion.cmake
        DESTINATION ${CUDL_INSTALL_CMAKEDIR})

# pkg-config: relocatable (paths relative to the .pc file), so any install prefix works.
if(CUDL_WITH_CUDA)
  set(CUDL_PC_CFLAGS "-DCUDL_WITH_CUDA=1")
else()
  set(CUDL_PC_CFLAGS "")
endif()
file(RELATIVE_PATH CUDL_PC_PREFIX_FROM_PCDIR /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" CUDL_PC_PREFIX_FROM_PCDIR "${CUDL_PC_PREFIX_FROM_PCDIR}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/cudl.pc.in ${CMAKE_CURRENT_BINARY_DIR}/cudl.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/cudl.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
