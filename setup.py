"""The compiled data path (meshwg.accel._fastpath, over OpenSSL's libcrypto) is optional:
without a compiler or libssl-dev the build goes on without it and meshwg runs its pure
Python path (meshwg.accel says which). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "meshwg.accel._fastpath",
    sources=["meshwg/accel/_fastpath.c"],
    libraries=["crypto"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
    optional=True,
)])
