# advisor setup: llama.cpp, cpu build: no GPU: CPU build for ARM Neoverse-V2
# found: no llama.cpp engine installed
# needs: c++ or g++ or clang++: a C/C++ compiler to build llama.cpp (llama-cpp-python README 'Requirements': gcc or clang on Linux, Xcode on macOS)
# managed virtualenv: /venvs/llama-cpp
# create the managed virtualenv
/usr/bin/python3 -m venv /venvs/llama-cpp
# build llama-cpp-python 0.3.36 with the cpu backend
env -u PYTHONPATH -u PYTHONHOME /venvs/llama-cpp/bin/python -m pip install 'llama-cpp-python[server]==0.3.36'
# then advisor verifies: load and run a generated 2-layer model on the CPU (CPU-only build: no offload expected)
