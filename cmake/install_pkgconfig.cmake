# Runs at install time, from the install(CODE) in cmake/install.cmake: writes rlock.pc for the
# prefix being installed to (CMAKE_INSTALL_PREFIX here is the install-time one, --prefix included)
# and installs it like install(FILES) would (file(INSTALL) applies DESTDIR and records the file in
# install_manifest.txt).
#
# Inputs: RLOCK_PC_IN, RLOCK_PC_WORKDIR, RLOCK_PC_LIBDIR, RLOCK_PC_INCLUDEDIR, PROJECT_VERSION,
# PROJECT_DESCRIPTION.

set(prefix "${CMAKE_INSTALL_PREFIX}")
# Relative GNUInstallDirs values become ${prefix}-relative, as pkg-config files usually are; an
# absolute one (-DCMAKE_INSTALL_LIBDIR=/usr/lib64) is kept as given.
if(IS_ABSOLUTE "${RLOCK_PC_LIBDIR}")
  set(libdir "${RLOCK_PC_LIBDIR}")
  set(_rlock_pc_dest "${RLOCK_PC_LIBDIR}/pkgconfig")
else()
  set(libdir "\${exec_prefix}/${RLOCK_PC_LIBDIR}")
  set(_rlock_pc_dest "${CMAKE_INSTALL_PREFIX}/${RLOCK_PC_LIBDIR}/pkgconfig")
endif()
if(IS_ABSOLUTE "${RLOCK_PC_INCLUDEDIR}")
  set(includedir "${RLOCK_PC_INCLUDEDIR}")
else()
  set(includedir "\${prefix}/${RLOCK_PC_INCLUDEDIR}")
endif()

# One staging directory per destination, so two installs to different prefixes at the same time
# cannot hand each other their .pc file.
string(MD5 _rlock_pc_key "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}")
set(_rlock_pc_file "${RLOCK_PC_WORKDIR}/${_rlock_pc_key}/rlock.pc")
configure_file("${RLOCK_PC_IN}" "${_rlock_pc_file}" @ONLY)
file(INSTALL DESTINATION "${_rlock_pc_dest}" TYPE FILE FILES "${_rlock_pc_file}")
