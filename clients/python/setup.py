"""The wheel carries the gateway's generated stubs, copied at build time from gen/python (their one
copy in the repository, written by ``python proto/generate.py``), so they never drift by hand."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

STUBS = Path(__file__).resolve().parents[2] / "gen" / "python"
#: the proto packages a gateway client needs: the gateway's and the messages it shares
STUB_PACKAGES = ("nanolens/common/v1", "nanolens/gateway/v1")


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        for package in STUB_PACKAGES:
            files = sorted((STUBS / package).glob("*_pb2*.py*"))
            if not files:
                raise SystemExit(f"no generated stubs in {STUBS / package}: run `python proto/generate.py`")
            target = Path(self.build_lib) / package
            self.mkpath(str(target))
            for f in files:
                self.copy_file(str(f), str(target / f.name))


setup(cmdclass={"build_py": BuildWithStubs})
