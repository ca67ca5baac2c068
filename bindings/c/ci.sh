#!/usr/bin/env bash
# Builds libshmbus in release mode and compiles and runs the C and C++ examples against it,
# as a user would: the system cc / c++, -Wall -Wextra -Werror, linked once against the
# shared library and once against the static one. (cargo test --workspace runs them too,
# against the test build, along with every error path and the multi-process test.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

target="${CARGO_TARGET_DIR:-$root/target}"
lib="$target/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release -p bus-c
ls -l "$lib/libshmbus.so" "$lib/libshmbus.a"

cflags=(-Wall -Wextra -Werror -pedantic -O2 -I "$here/include")
shared=(-L "$lib" -lshmbus "-Wl,-rpath,$lib")
static=("$lib/libshmbus.a" -lpthread -ldl -lm)

set -x
cc -std=c11 "${cflags[@]}" "$here/examples/pubsub.c" "${shared[@]}" -o "$work/pubsub-c"
cc -std=c11 "${cflags[@]}" "$here/examples/pubsub.c" "${static[@]}" -o "$work/pubsub-c-static"
c++ -std=c++17 "${cflags[@]}" -pthread "$here/examples/pubsub.cpp" "${shared[@]}" -o "$work/pubsub-cpp"
c++ -std=c++17 "${cflags[@]}" -pthread "$here/examples/pubsub.cpp" "${static[@]}" -o "$work/pubsub-cpp-static"

timeout 60 "$work/pubsub-c" "$work/c.bus" 100000
timeout 60 "$work/pubsub-c-static" "$work/c-static.bus" 100000
timeout 60 "$work/pubsub-cpp" "$work/cpp.bus" 1000000
timeout 60 "$work/pubsub-cpp-static" "$work/cpp-static.bus" 1000000
