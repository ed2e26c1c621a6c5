"""setup.py: builds the C engine in native_ext/ as ptfuzz._engine and crosscheck's helper programs
ptfuzz/crosscheck/ptfuzz-host and ptfuzz/crosscheck/ptfuzz-kvm (the rest lives in pyproject.toml)."""
import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

sanitize = os.environ.get("PTFUZZ_SANITIZE", "")
# -fvisibility=hidden: only PyInit__engine (PyMODINIT_FUNC) is exported, so the calls between the engine's many
# files (native_ext/core, mm, arch, ...) are direct calls, not through the PLT, and a file may inline its own
# non-static functions
extra_compile = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
extra_link = []
if sanitize:
    # make asan: ASan + UBSan, aborting on the first report; the fuzzing build keeps -O2
    opt = "-O2" if sanitize == "fuzzer-no-link" else "-O1"
    flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all", opt, "-g"]
    if sanitize == "fuzzer-no-link" and os.environ.get("PTFUZZ_TRACE_CMP", "0") == "0":
        # edge counters only: the comparison callbacks cost half of an execution and guide nothing here,
        # since decisions are bytes modulo n, not values compared with the input (docs/fuzzing.md, B2)
        flags.append("-fno-sanitize-coverage=trace-cmp,indirect-calls")
    extra_compile += flags
    extra_link += flags

HOST_SOURCE = "ptfuzz/crosscheck/ptfuzz_host.c"
# what each host and VM operation does: shared with `ptfuzz repro-c`'s reproducers, included by the helpers
HOST_HEADERS = ["ptfuzz/crosscheck/ptfuzz_ops.h", "ptfuzz/crosscheck/ptfuzz_kvm_ops.h"]
HOST_NAME = "ptfuzz-host"
# crosscheck --kvm's helper (x86_64 Linux only; built the same way, dynamic: it needs no constant layout)
KVM_SOURCE = "ptfuzz/crosscheck/ptfuzz_kvm.c"
KVM_NAME = "ptfuzz-kvm"
ENGINE_SOURCES = sorted(glob.glob("native_ext/**/*.c", recursive=True))


class build_ext_with_host(build_ext):
    """build_ext, plus ptfuzz-host: a standalone executable (not part of the extension) that
    `ptfuzz crosscheck` runs to execute operations on the real kernel. Linux only."""

    def _host_paths(self, name=HOST_NAME):
        regular = os.path.join(self.build_lib, "ptfuzz", "crosscheck", name)
        inplace = os.path.join(self.get_finalized_command("build_py").get_package_dir("ptfuzz.crosscheck"), name)
        return regular, inplace

    def _kvm_wanted(self):
        import platform
        return sys.platform.startswith("linux") and platform.machine() == "x86_64"

    def run(self):
        super().run()  # also sets up self.compiler: the helper is built with the engine's compiler
        if sys.platform.startswith("linux"):
            self.build_host()
        if self._kvm_wanted():
            self.build_kvm()

    def build_kvm(self):
        from distutils.errors import CCompilerError, DistutilsExecError

        regular, inplace = self._host_paths(KVM_NAME)
        if self.force or not os.path.exists(regular) or any(
                os.path.getmtime(f) > os.path.getmtime(regular) for f in [KVM_SOURCE, *HOST_HEADERS] if os.path.exists(f)):
            try:
                objects = self.compiler.compile([KVM_SOURCE], output_dir=self.build_temp,
                                                extra_postargs=["-O2", "-Wall", "-Wextra"])
                self.compiler.link_executable(objects, KVM_NAME, output_dir=os.path.dirname(regular))
            except (CCompilerError, DistutilsExecError) as e:
                self.warn(f"{KVM_NAME} not built ({e}); `ptfuzz crosscheck --kvm` will try to compile it when run")
                return
        if self.inplace:
            self.copy_file(regular, inplace)

    def build_host(self):
        from distutils.errors import CCompilerError, DistutilsExecError, LinkError

        regular, inplace = self._host_paths()
        stale = self.force or not os.path.exists(regular) or any(
            os.path.getmtime(f) > os.path.getmtime(regular) for f in [HOST_SOURCE, *HOST_HEADERS] if os.path.exists(f))
        if stale:
            try:
                # never the sanitizer flags: ASan's shadow memory would sit in the helper's window
                objects = self.compiler.compile([HOST_SOURCE], output_dir=self.build_temp,
                                                extra_postargs=["-O2", "-Wall", "-Wextra"])
                # static where libc.a exists: fewer mappings of its own to keep constant
                for extra in (["-static"], []):
                    try:
                        self.compiler.link_executable(objects, HOST_NAME, output_dir=os.path.dirname(regular),
                                                      extra_postargs=extra)
                        break
                    except LinkError:
                        if not extra:
                            raise
            except (CCompilerError, DistutilsExecError) as e:
                # the engine is usable without it; ptfuzz.host compiles the helper on first use
                self.warn(f"{HOST_NAME} not built ({e}); `ptfuzz crosscheck` will try to compile it when run")
                return
        if self.inplace:
            self.copy_file(regular, inplace)

    def get_outputs(self):
        outputs = super().get_outputs()
        if sys.platform.startswith("linux") and not self.inplace:
            outputs.append(self._host_paths()[0])
        if self._kvm_wanted() and not self.inplace:
            outputs.append(self._host_paths(KVM_NAME)[0])
        return outputs

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        if sys.platform.startswith("linux") and self.inplace:
            regular, inplace = self._host_paths()
            mapping[regular] = inplace
        if self._kvm_wanted() and self.inplace:
            regular, inplace = self._host_paths(KVM_NAME)
            mapping[regular] = inplace
        return mapping

    def get_source_files(self):
        return super().get_source_files() + [HOST_SOURCE, KVM_SOURCE]  # so that an sdist carries them


setup(
    cmdclass={"build_ext": build_ext_with_host},
    ext_modules=[
        Extension(
            "ptfuzz._engine",
            # every engine source below native_ext/ (core/, arch/, mm/, kvm/, ...)
            sources=ENGINE_SOURCES,
            depends=glob.glob("native_ext/**/*.h", recursive=True),
            include_dirs=["native_ext"],
            extra_compile_args=extra_compile,
            extra_link_args=extra_link,
        )
    ]
)
