# Sourced by scripts/demo and scripts/test: make the virtual environment $VENV and install
# textprop with the extras in $1.
#
# llama-cpp-python compiles llama.cpp with -march=native. On a CPU that reports AMX but runs
# in a VM that does not enable its tile state (seen here: Sapphire Rapids, 2026-12-02),
# every decode then dies with a general protection fault in ggml's AMX matmul
# (`ldtilecfg`), so the build leaves AMX out. A wheel cached by an earlier build with AMX
# is dropped and rebuilt once. A CMAKE_ARGS of your own is used as it is.
NO_AMX='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'

textprop_venv() {
  local extras="$1" py
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  py="$VENV/bin/python"
  "$py" -m pip install -q --upgrade pip
  local own_cmake_args="${CMAKE_ARGS:-}"
  export CMAKE_ARGS="${CMAKE_ARGS:--DCMAKE_C_FLAGS=\"$NO_AMX\" -DCMAKE_CXX_FLAGS=\"$NO_AMX\"}"
  "$py" -m pip install -q -e ".[$extras]"
  if [ -z "$own_cmake_args" ] && "$py" - 2>/dev/null <<'PY'
import sys
import llama_cpp
sys.exit(0 if "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode() else 1)
PY
  then
    echo "llama-cpp-python was built with AMX: rebuilding it without (~5 min, once)" >&2
    local version
    version="$("$py" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
    "$py" -m pip cache remove llama_cpp_python >/dev/null 2>&1 || true
    "$py" -m pip install -q --force-reinstall --no-deps "llama-cpp-python==$version"
  fi
}
