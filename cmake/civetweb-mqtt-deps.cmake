# Finds what civetweb-mqtt links to and defines three imported INTERFACE
# targets for it, with the same names in this project's build and in the
# installed package (civetweb-mqttConfig.cmake includes this file too):
#
#   civetweb-mqtt::dep-civetweb   CivetWeb (civetweb.h, libcivetweb)
#   civetweb-mqtt::dep-paho       paho.mqtt.c with TLS (CIVETWEB_MQTT_PAHO_LIB)
#   civetweb-mqtt::dep-cjson      cJSON (cjson/cJSON.h, libcjson)
#
# and, when found, for C++ programs on CivetServer (Debian's libcivetweb-dev
# has libcivetweb-cpp and CivetServer.h but no CMake target for them):
#
#   civetweb-mqtt::civetweb-cpp   CivetWeb's C++ library (CivetServer.h,
#                                 libcivetweb-cpp), linking dep-civetweb
#
# Each is looked for in this order, first match wins:
#
#   CivetWeb: a target already defined (civetweb-c-library of a CivetWeb
#     source tree added with add_subdirectory, or civetweb::civetweb);
#     pkg-config "civetweb" (what CivetWeb's own CMake installs);
#     find_path / find_library. CivetWeb's CMake package is NOT used:
#     Debian 12's imports /usr/bin/civetweb and is a fatal error, which
#     no caller can catch, unless the "civetweb" binary package is
#     installed.
#   paho: a target already defined (paho-mqtt3cs, paho-mqtt3cs-static, or
#     eclipse-paho-mqtt-c::paho-mqtt3cs[-static]); its CMake package, after
#     OpenSSL has been found (the package links OpenSSL::SSL without
#     looking for OpenSSL itself: Debian's 1.3.12 and upstream 1.3.13 to
#     master), and only when OpenSSL::SSL exists; find_path / find_library.
#   cJSON: its CMake package (target cjson); pkg-config "libcjson";
#     find_path / find_library.
#
# CMAKE_PREFIX_PATH (or <Name>_ROOT-style hints CIVETWEB_MQTT_CIVETWEB_ROOT,
# CIVETWEB_MQTT_PAHO_ROOT, CIVETWEB_MQTT_CJSON_ROOT) selects other builds.
#
# Sets CIVETWEB_MQTT_DEPS_MISSING to the list of what was not found (the
# caller decides whether that is fatal) and CIVETWEB_MQTT_CIVETWEB_FROM /
# _PAHO_FROM / _CJSON_FROM to how each one was found.

set(CIVETWEB_MQTT_DEPS_MISSING "")
# The paho.mqtt.c library the client is built on: named here only.
set(CIVETWEB_MQTT_PAHO_LIB paho-mqtt3cs)

if(NOT TARGET Threads::Threads)
  set(THREADS_PREFER_PTHREAD_FLAG ON)
  find_package(Threads QUIET)
endif()
set(_cwm_threads "")
if(TARGET Threads::Threads)
  set(_cwm_threads Threads::Threads)
endif()

find_package(PkgConfig QUIET)

# An imported INTERFACE target `name` that links `libs`, with `incs`
# (GLOBAL when _cwm_global is GLOBAL).
function(_cwm_dep_target name incs libs)
  add_library(${name} INTERFACE IMPORTED ${_cwm_global})
  if(incs)
    set_property(TARGET ${name} PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${incs}")
  endif()
  set_property(TARGET ${name} PROPERTY INTERFACE_LINK_LIBRARIES "${libs}")
endfunction()

# ---- CivetWeb ---------------------------------------------------------------
if(NOT TARGET civetweb-mqtt::dep-civetweb)
  set(_cwm_lib "")
  if(TARGET civetweb-c-library)
    set(_cwm_lib civetweb-c-library)
    set(CIVETWEB_MQTT_CIVETWEB_FROM "target civetweb-c-library")
  elseif(TARGET civetweb::civetweb)
    set(_cwm_lib civetweb::civetweb)
    set(CIVETWEB_MQTT_CIVETWEB_FROM "target civetweb::civetweb")
  endif()
  if(_cwm_lib)
    _cwm_dep_target(civetweb-mqtt::dep-civetweb "" "${_cwm_lib}")
  else()
    if(PKG_CONFIG_FOUND AND NOT CIVETWEB_MQTT_CIVETWEB_ROOT)
      pkg_check_modules(CWM_PC_CIVETWEB QUIET IMPORTED_TARGET civetweb)
    endif()
    if(TARGET PkgConfig::CWM_PC_CIVETWEB)
      # CivetWeb's civetweb.pc names no private libraries: a static
      # libcivetweb.a also needs threads and libdl (it loads OpenSSL).
      _cwm_dep_target(civetweb-mqtt::dep-civetweb ""
        "PkgConfig::CWM_PC_CIVETWEB;${_cwm_threads};${CMAKE_DL_LIBS}")
      set(CIVETWEB_MQTT_CIVETWEB_FROM "pkg-config civetweb (${CWM_PC_CIVETWEB_LINK_LIBRARIES})")
    else()
      find_path(CIVETWEB_MQTT_CIVETWEB_INCLUDE_DIR civetweb.h
        HINTS ${CIVETWEB_MQTT_CIVETWEB_ROOT} PATH_SUFFIXES include)
      find_library(CIVETWEB_MQTT_CIVETWEB_LIBRARY civetweb
        HINTS ${CIVETWEB_MQTT_CIVETWEB_ROOT} PATH_SUFFIXES lib lib64)
      if(CIVETWEB_MQTT_CIVETWEB_INCLUDE_DIR AND CIVETWEB_MQTT_CIVETWEB_LIBRARY)
        _cwm_dep_target(civetweb-mqtt::dep-civetweb
          "${CIVETWEB_MQTT_CIVETWEB_INCLUDE_DIR}"
          "${CIVETWEB_MQTT_CIVETWEB_LIBRARY};${_cwm_threads};${CMAKE_DL_LIBS}")
        set(CIVETWEB_MQTT_CIVETWEB_FROM "${CIVETWEB_MQTT_CIVETWEB_LIBRARY}")
      else()
        list(APPEND CIVETWEB_MQTT_DEPS_MISSING "CivetWeb (civetweb.h, libcivetweb)")
      endif()
    endif()
  endif()
endif()

# ---- paho.mqtt.c (${CIVETWEB_MQTT_PAHO_LIB}) ------------------------------------
if(NOT TARGET civetweb-mqtt::dep-paho)
  # Before paho's package: it links OpenSSL::SSL and OpenSSL::Crypto
  # without find_dependency(OpenSSL).
  if(NOT TARGET OpenSSL::SSL)
    find_package(OpenSSL QUIET)
  endif()
  set(_cwm_lib "")
  set(_cwm_p ${CIVETWEB_MQTT_PAHO_LIB})
  foreach(_t ${_cwm_p} eclipse-paho-mqtt-c::${_cwm_p}
             ${_cwm_p}-static eclipse-paho-mqtt-c::${_cwm_p}-static)
    if(NOT _cwm_lib AND TARGET ${_t})
      set(_cwm_lib ${_t})
    endif()
  endforeach()
  if(NOT _cwm_lib AND TARGET OpenSSL::SSL AND NOT CIVETWEB_MQTT_PAHO_ROOT)
    find_package(eclipse-paho-mqtt-c CONFIG QUIET)
    foreach(_t eclipse-paho-mqtt-c::${_cwm_p}
               eclipse-paho-mqtt-c::${_cwm_p}-static)
      if(NOT _cwm_lib AND TARGET ${_t})
        set(_cwm_lib ${_t})
      endif()
    endforeach()
  endif()
  if(_cwm_lib)
    _cwm_dep_target(civetweb-mqtt::dep-paho "" "${_cwm_lib}")
    set(CIVETWEB_MQTT_PAHO_FROM "target ${_cwm_lib}")
  else()
    find_path(CIVETWEB_MQTT_PAHO_INCLUDE_DIR MQTTClient.h
      HINTS ${CIVETWEB_MQTT_PAHO_ROOT} PATH_SUFFIXES include)
    find_library(CIVETWEB_MQTT_PAHO_LIBRARY ${_cwm_p}
      HINTS ${CIVETWEB_MQTT_PAHO_ROOT} PATH_SUFFIXES lib lib64)
    if(CIVETWEB_MQTT_PAHO_INCLUDE_DIR AND CIVETWEB_MQTT_PAHO_LIBRARY)
      set(_cwm_libs "${CIVETWEB_MQTT_PAHO_LIBRARY}")
      if(TARGET OpenSSL::SSL)
        list(APPEND _cwm_libs OpenSSL::SSL OpenSSL::Crypto)
      endif()
      list(APPEND _cwm_libs ${_cwm_threads} ${CMAKE_DL_LIBS})
      _cwm_dep_target(civetweb-mqtt::dep-paho "${CIVETWEB_MQTT_PAHO_INCLUDE_DIR}"
        "${_cwm_libs}")
      set(CIVETWEB_MQTT_PAHO_FROM "${CIVETWEB_MQTT_PAHO_LIBRARY}")
    else()
      list(APPEND CIVETWEB_MQTT_DEPS_MISSING "paho.mqtt.c (MQTTClient.h, lib${_cwm_p})")
    endif()
  endif()
endif()

# ---- cJSON --------------------------------------------------------------------
if(NOT TARGET civetweb-mqtt::dep-cjson)
  set(_cwm_lib "")
  if(NOT CIVETWEB_MQTT_CJSON_ROOT)
    if(NOT TARGET cjson)
      find_package(cJSON CONFIG QUIET)
    endif()
    # Only an installed cJSON has cjson/cJSON.h, which the library includes.
    if(TARGET cjson)
      get_target_property(_cwm_imported cjson IMPORTED)
      if(_cwm_imported)
        set(_cwm_lib cjson)
        set(CIVETWEB_MQTT_CJSON_FROM "target cjson")
      endif()
    endif()
    if(NOT _cwm_lib AND PKG_CONFIG_FOUND)
      pkg_check_modules(CWM_PC_CJSON QUIET IMPORTED_TARGET libcjson)
      if(TARGET PkgConfig::CWM_PC_CJSON)
        set(_cwm_lib PkgConfig::CWM_PC_CJSON)
        set(CIVETWEB_MQTT_CJSON_FROM "pkg-config libcjson ${CWM_PC_CJSON_VERSION}")
      endif()
    endif()
  endif()
  if(_cwm_lib)
    _cwm_dep_target(civetweb-mqtt::dep-cjson "" "${_cwm_lib}")
  else()
    find_path(CIVETWEB_MQTT_CJSON_INCLUDE_DIR cjson/cJSON.h
      HINTS ${CIVETWEB_MQTT_CJSON_ROOT} PATH_SUFFIXES include)
    find_library(CIVETWEB_MQTT_CJSON_LIBRARY cjson
      HINTS ${CIVETWEB_MQTT_CJSON_ROOT} PATH_SUFFIXES lib lib64)
    if(CIVETWEB_MQTT_CJSON_INCLUDE_DIR AND CIVETWEB_MQTT_CJSON_LIBRARY)
      _cwm_dep_target(civetweb-mqtt::dep-cjson "${CIVETWEB_MQTT_CJSON_INCLUDE_DIR}"
        "${CIVETWEB_MQTT_CJSON_LIBRARY}")
      set(CIVETWEB_MQTT_CJSON_FROM "${CIVETWEB_MQTT_CJSON_LIBRARY}")
    else()
      list(APPEND CIVETWEB_MQTT_DEPS_MISSING "cJSON (cjson/cJSON.h, libcjson)")
    endif()
  endif()
endif()

# ---- CivetWeb's C++ library (optional) ------------------------------------------
if(NOT TARGET civetweb-mqtt::civetweb-cpp AND TARGET civetweb-mqtt::dep-civetweb)
  set(_cwm_lib "")
  foreach(_t civetweb-cpp civetweb::civetweb-cpp)
    if(NOT _cwm_lib AND TARGET ${_t})
      set(_cwm_lib ${_t})
    endif()
  endforeach()
  # GLOBAL: a project that add_subdirectory()s this one links it too.
  set(_cwm_global GLOBAL)
  if(_cwm_lib)
    _cwm_dep_target(civetweb-mqtt::civetweb-cpp "" "${_cwm_lib}")
  else()
    find_path(CIVETWEB_MQTT_CIVETWEB_CPP_INCLUDE_DIR CivetServer.h
      HINTS ${CIVETWEB_MQTT_CIVETWEB_ROOT} PATH_SUFFIXES include)
    find_library(CIVETWEB_MQTT_CIVETWEB_CPP_LIBRARY civetweb-cpp
      HINTS ${CIVETWEB_MQTT_CIVETWEB_ROOT} PATH_SUFFIXES lib lib64)
    if(CIVETWEB_MQTT_CIVETWEB_CPP_INCLUDE_DIR AND CIVETWEB_MQTT_CIVETWEB_CPP_LIBRARY)
      _cwm_dep_target(civetweb-mqtt::civetweb-cpp
        "${CIVETWEB_MQTT_CIVETWEB_CPP_INCLUDE_DIR}"
        "${CIVETWEB_MQTT_CIVETWEB_CPP_LIBRARY};civetweb-mqtt::dep-civetweb")
    endif()
  endif()
endif()

unset(_cwm_global)
unset(_cwm_lib)
unset(_cwm_p)
unset(_cwm_libs)
unset(_cwm_imported)
