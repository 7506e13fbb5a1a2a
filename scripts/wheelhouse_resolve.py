"""Resolve and download the wheels a target Python lacks: one set of top-level packages -> one folder.

Used by ``scripts/wheelhouse.sh`` (run that, not this). For a target interpreter (``--python-version``,
``--platform`` tags, ``--image``: what the target already has), starting from the set's top-level
requirements (``--top``, ``--top-nodeps``) and wheels already in the folder (``--seed-wheel``: the locally
built DeepSpeed), it reads every wheel's ``Requires-Dist``, evaluates the markers for the target (extras are
never taken), and for each requirement:

- a package the image has, whose known version satisfies it (or that carries no version bound): skipped;
- a package the image has in an unknown (or unsatisfying) version, with a version bound: a wheel that
  satisfies the bound goes to ``<folder>/if-needed/`` and the bound to ``if-needed/requirements.txt``; the
  check script installs it only where the image's own copy is missing or fails the bound (its own
  requirements go through these same rules, so what it needs is there when it is installed; never for the
  packages in ``NEVER_SHIP``: torch, pyarrow, numpy, the CUDA stack... a wrong one of those is reported, not
  replaced);
- a package in ``--present`` (another folder of the same wheelhouse, e.g. the main set for the datasets sets):
  skipped, and named in ``<folder>/shared.txt`` when the set must install it from there too (``--share``);
- anything else: downloaded (``pip download --no-deps --only-binary=:all:`` for the target), its own
  requirements queued. A pure-Python package published only as an sdist is built here with
  ``pip wheel --no-deps`` (it must come out as ``py3-none-any``).

All bounds on one package are combined; a package whose chosen version fails a later bound is fetched again.
So each folder holds ONE version of each package. ``<folder>/MANIFEST.txt`` lists every wheel with who needs it.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version

# Never shipped in a wheelhouse even when a bound is unmet: large, or tied to the image's CUDA build.
NEVER_SHIP = {"torch", "pyarrow", "numpy", "triton", "jax", "jaxlib", "pandas", "scipy", "transformers", "tokenizers"}
NEVER_SHIP_PREFIXES = ("nvidia-", "cuda-", "jax-")


def target_environment(python_version: str) -> dict[str, str]:
    major_minor = ".".join(python_version.split(".")[:2])
    return {
        "python_version": major_minor,
        "python_full_version": python_version if python_version.count(".") == 2 else f"{major_minor}.0",
        "implementation_name": "cpython",
        "implementation_version": python_version,
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def read_image(spec: str) -> dict[str, str | None]:
    """``name==version`` / ``name`` lines (a file, or ``-`` for none) -> {canonical name: version or None}."""
    packages: dict[str, str | None] = {}
    if spec == "-":
        return packages
    for line in Path(spec).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        packages[canonicalize_name(name.strip())] = version.strip() or None
    return packages


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(archive.read(metadata).decode("utf-8", "replace"))
    return message.get_all("Requires-Dist") or []


def wheel_name_version(wheel: Path) -> tuple[str, Version]:
    name, version, _, _ = parse_wheel_filename(wheel.name)
    return canonicalize_name(name), version


class Resolver:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.env = target_environment(args.python_version)
        self.image = read_image(args.image)
        self.present = {name: wheel for f in args.present for name, wheel in self._folder_wheels(Path(f)).items()}
        self.dest = Path(args.dest)
        self.if_needed = self.dest / "if-needed"
        self.bounds: dict[str, SpecifierSet] = {}
        self.needed_by: dict[str, set[str]] = {}
        self.chosen: dict[str, Path] = {}
        self.if_needed_bounds: dict[str, SpecifierSet] = {}
        self.if_needed_chosen: dict[str, Path] = {}
        self.shared: set[str] = set()
        self.nodeps: set[str] = set()

    @staticmethod
    def _folder_wheels(folder: Path) -> dict[str, Path]:
        return {wheel_name_version(w)[0]: w for w in folder.glob("*.whl")}

    # ---------------------------------------------------------------------------------------- fetching
    def _pip(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)

    def fetch(self, name: str, bounds: SpecifierSet, folder: Path) -> Path:
        """Download (or build, for a pure sdist) the best wheel of ``name`` within ``bounds`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        requirement = f"{name}{bounds}"
        with tempfile.TemporaryDirectory() as tmp:
            platforms = [a for p in self.args.platform for a in ("--platform", p)]
            done = self._pip(
                "download", "--no-deps", "--only-binary=:all:", "--python-version", self.args.python_version,
                "--implementation", "cp", *platforms, "-d", tmp, requirement,
            )
            if done.returncode != 0:
                built = self._pip("wheel", "--no-deps", "-w", tmp, requirement)
                wheels = list(Path(tmp).glob("*.whl"))
                if built.returncode != 0 or not wheels or not wheels[0].name.endswith("-none-any.whl"):
                    raise SystemExit(f"no wheel of {requirement} for the target:\n{done.stderr[-2000:]}\n"
                                     f"{built.stderr[-1000:]}")
                print(f"  built {wheels[0].name} from its sdist (pure Python)", flush=True)
            wheel = next(Path(tmp).glob("*.whl"))
            target = folder / wheel.name
            target.write_bytes(wheel.read_bytes())
        return target

    # ---------------------------------------------------------------------------------------- resolving
    def add(self, requirement: str, requirer: str, follow: bool = True) -> None:
        req = Requirement(requirement)
        if req.marker is not None and not req.marker.evaluate(self.env):
            return
        name = canonicalize_name(req.name)
        if not follow:
            self.nodeps.add(name)
        if name in self.present:
            if self.args.share and name not in self.shared:  # installed from there too, with what it needs
                self.shared.add(name)
                for dependency in wheel_requirements(self.present[name]):
                    self.add(dependency, name)
            return
        if name in self.image:
            version = self.image[name]
            if not str(req.specifier):
                return
            if version is not None and req.specifier.contains(Version(version), prereleases=True):
                return
            if name in NEVER_SHIP or name.startswith(NEVER_SHIP_PREFIXES):
                print(f"  note: {requirer} wants {name}{req.specifier}; the image's {name} ({version or 'version unknown'}) "
                      "is used as it is (never shipped)", flush=True)
                return
            bounds = self.if_needed_bounds.get(name, SpecifierSet()) & req.specifier
            self.if_needed_bounds[name] = bounds
            self.needed_by.setdefault(name, set()).add(requirer)
            current = self.if_needed_chosen.get(name)
            if current is None or not bounds.contains(wheel_name_version(current)[1], prereleases=True):
                if current is not None:
                    current.unlink()
                self.if_needed_chosen[name] = self.fetch(name, bounds, self.if_needed)
                print(f"  if-needed {self.if_needed_chosen[name].name} ({name}{bounds}, for {requirer})", flush=True)
                for dependency in wheel_requirements(self.if_needed_chosen[name]):  # wherever the rules put them
                    self.add(dependency, name)
            return
        bounds = self.bounds.get(name, SpecifierSet()) & req.specifier
        self.bounds[name] = bounds
        self.needed_by.setdefault(name, set()).add(requirer)
        current = self.chosen.get(name)
        if current is not None and bounds.contains(wheel_name_version(current)[1], prereleases=True):
            return
        if current is not None:
            print(f"  {current.name} fails {name}{bounds} (from {requirer}): fetching again", flush=True)
            current.unlink()
        wheel = self.fetch(name, bounds, self.dest)
        self.chosen[name] = wheel
        print(f"  {wheel.name} (for {requirer})", flush=True)
        if follow:
            for dependency in wheel_requirements(wheel):
                self.add(dependency, name)

    def run(self) -> None:
        self.dest.mkdir(parents=True, exist_ok=True)
        for wheel in map(Path, self.args.seed_wheel):
            name, _ = wheel_name_version(wheel)
            self.chosen[name] = wheel
            self.needed_by.setdefault(name, set()).add("top level")
            print(f"  {wheel.name} (top level, built here)", flush=True)
            for dependency in wheel_requirements(wheel):
                self.add(dependency, name)
        for requirement in self.args.top:
            self.add(requirement, "top level")
        for requirement in self.args.top_nodeps:
            self.add(requirement, "top level (--no-deps: data files only)", follow=False)
        for requirement in self.args.extra:
            requirement, _, why = requirement.partition("@@")
            self.add(requirement.strip(), why.strip() or "extra bound")
        self.write_manifests()

    def write_manifests(self) -> None:
        lines = [f"# {self.dest.name}: wheels for CPython {self.args.python_version}, "
                 f"platforms {' '.join(self.args.platform)}", "# wheel  <-  needed by"]
        for name, wheel in sorted(self.chosen.items()):
            lines.append(f"{wheel.name}  <-  {', '.join(sorted(self.needed_by.get(name, {'?'})))}")
        for name, wheel in sorted(self.if_needed_chosen.items()):
            lines.append(f"if-needed/{wheel.name}  <-  {name}{self.if_needed_bounds[name]} for "
                         f"{', '.join(sorted(self.needed_by[name]))}")
        if self.shared:
            lines.append(f"# also installs from the main folder: {' '.join(sorted(self.shared))}")
        (self.dest / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
        if self.if_needed_chosen:
            (self.if_needed / "requirements.txt").write_text(
                "".join(f"{name}{self.if_needed_bounds[name]}\n" for name in sorted(self.if_needed_chosen))
            )
        if self.shared:
            (self.dest / "shared.txt").write_text("".join(f"{name}\n" for name in sorted(self.shared)))
        print(json.dumps({"folder": str(self.dest), "wheels": len(self.chosen),
                          "if_needed": len(self.if_needed_chosen), "shared": sorted(self.shared)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--python-version", required=True, help="e.g. 3.12 or 3.12.3")
    parser.add_argument("--platform", action="append", required=True, help="a wheel platform tag (repeat)")
    parser.add_argument("--image", required=True, help="file of name[==version] lines the target has, or -")
    parser.add_argument("--present", action="append", default=[], help="a folder of wheels installed beside")
    parser.add_argument("--share", action="store_true", help="list what --present provides in shared.txt")
    parser.add_argument("--top", action="append", default=[])
    parser.add_argument("--top-nodeps", action="append", default=[])
    parser.add_argument("--extra", action="append", default=[], help="'name<bound @@ why' a bound no wheel states")
    parser.add_argument("--seed-wheel", action="append", default=[])
    Resolver(parser.parse_args(argv)).run()


if __name__ == "__main__":
    main()
