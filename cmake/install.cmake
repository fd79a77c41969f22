# Install rules (included from the top-level CMakeLists.txt after the rlock target is defined).
#
# Layout, with GNUInstallDirs (multiarch libdir on Debian, e.g. lib/x86_64-linux-gnu):
#   <libdir>/librlock.so.X.Y.Z, librlock.so.X (SONAME)      component "runtime"
#   <libdir>/librlock.so (namelink), <includedir>/rlock.h   component "development"
#   <libdir>/cmake/rlock/rlock{Config,ConfigVersion,Targets*}.cmake  (find_package(rlock))
#   <libdir>/pkgconfig/rlock.pc                              (pkg-config rlock)
#
# hiredis, libuv and Threads are PRIVATE link dependencies of a shared library: librlock.so records
# them as DT_NEEDED, and the exported rlock::rlock target does not name them, so neither the CMake
# package nor a consumer's link line has to find them (tests/packaging checks that rlockTargets.cmake
# names no PkgConfig:: target). rlock.pc lists them in Requires.private for static-style queries.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(RLOCK_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/rlock")

install(TARGETS rlock EXPORT rlockTargets
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT runtime NAMELINK_COMPONENT development
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT development
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT runtime
  PUBLIC_HEADER DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT development)

install(EXPORT rlockTargets
  NAMESPACE rlock::
  DESTINATION "${RLOCK_INSTALL_CMAKEDIR}"
  COMPONENT development)

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/rlockConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/rlockConfig.cmake"
  INSTALL_DESTINATION "${RLOCK_INSTALL_CMAKEDIR}")
# SameMajorVersion: the major is the SONAME, so any 1.x library satisfies find_package(rlock 1.y)
# for y <= x, and nothing else does.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/rlockConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/rlockConfig.cmake"
  "${PROJECT_BINARY_DIR}/rlockConfigVersion.cmake"
  DESTINATION "${RLOCK_INSTALL_CMAKEDIR}"
  COMPONENT development)

# rlock.pc is configured at install time rather than at configure time, so that its prefix is the
# one actually installed to: `cmake --install build --prefix /opt/rlock` must give a .pc that points
# to /opt/rlock, not to the CMAKE_INSTALL_PREFIX the build was configured with. (The CMake package
# needs no such step: its files locate themselves.) Bracket arguments keep the values literal when
# the install script parses them.
install(CODE "
  set(RLOCK_PC_IN [==[${PROJECT_SOURCE_DIR}/pkgconfig/rlock.pc.in]==])
  set(RLOCK_PC_WORKDIR [==[${PROJECT_BINARY_DIR}/pkgconfig]==])
  set(RLOCK_PC_LIBDIR [==[${CMAKE_INSTALL_LIBDIR}]==])
  set(RLOCK_PC_INCLUDEDIR [==[${CMAKE_INSTALL_INCLUDEDIR}]==])
  set(PROJECT_VERSION [==[${PROJECT_VERSION}]==])
  set(PROJECT_DESCRIPTION [==[${PROJECT_DESCRIPTION}]==])
  include([==[${CMAKE_CURRENT_LIST_DIR}/install_pkgconfig.cmake]==])
" COMPONENT development)
