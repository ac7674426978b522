"""The compiled data path (meshwg.accel._fastpath, over OpenSSL's libcrypto) and handshake
chain (meshwg.accel._noise, libsodium and libgcrypt) are optional: without a compiler,
libssl-dev, libsodium-dev or libgcrypt20-dev the build goes on without them and meshwg
runs its pure Python path (meshwg.accel says which). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
         "-Wno-cast-function-type"]

setup(ext_modules=[Extension(
    "meshwg.accel._fastpath",
    sources=["meshwg/accel/_fastpath.c", "meshwg/accel/_crossing.c"],
    depends=["meshwg/accel/_fastpath.h"],
    libraries=["crypto"],
    extra_compile_args=FLAGS,
    optional=True,
), Extension(
    # the handshake chain: X25519 and ChaCha20-Poly1305 from libsodium, BLAKE2s from libgcrypt
    "meshwg.accel._noise",
    sources=["meshwg/accel/_noise.c"],
    libraries=["sodium", "gcrypt"],
    extra_compile_args=FLAGS,
    optional=True,
)])
