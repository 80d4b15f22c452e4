#!/usr/bin/env bash
# Packs into one file what an offline CUDA machine with a stock PyTorch image lacks to run scripts/gpu_check.sh:
# nnU-Net, those of its dependencies that such images do not hold, and this package, unpacked as one
# site-packages folder with launchers for their commands (nnUNetv2_train, nnunet-cmcl, ...). Versions are the
# ones installed in the Python that runs this script, that is the tested ones. About 40 MB; a few minutes (xz).
#
#   PYTHON=.venv/bin/python bash scripts/gpu_bundle.sh                # CPython 3.12, x86_64 Linux: .gpu_bundle.tar.xz
#   PY_VERSION=3.11 BUNDLE=/tmp/b.tar.xz bash scripts/gpu_bundle.sh   # another CPython
#
# On the CUDA machine: CMCL_BUNDLE=.gpu_bundle.tar.xz bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PY_VERSION=${PY_VERSION:-3.12}
BUNDLE=${BUNDLE:-.gpu_bundle.tar.xz}
# imported by nnunetv2 and nnunet-cmcl, and absent from PyTorch images (which hold torch, numpy, scipy, pandas,
# scikit-image, scikit-learn, matplotlib, seaborn, timm, einops, requests, pyyaml, ...)
PACKAGES=(nnunetv2 acvl-utils batchgenerators batchgeneratorsv2 dynamic-network-architectures blosc2 ndindex numexpr
          pydantic pydantic-core annotated-types typing-inspection graphviz nibabel SimpleITK yacs
          connected-components-3d future unittest2 linecache2 traceback2)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)

WORK=$(mktemp -d -t cmcl_bundle.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
for name in "${PACKAGES[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null) || {
        echo "gpu_bundle: $name is not installed in $PY; run scripts/setup_env.sh and use PYTHON=.venv/bin/python" >&2
        exit 2
    }
    echo "gpu_bundle: $name $version"
    if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
            "${platform_args[@]}" -d "$WORK/wheels" "$name==$version" 2>/dev/null; then
        # published as source only: pure Python, so a wheel built here serves any CPython 3
        "$PY" -m pip wheel -q --no-deps -w "$WORK/wheels" "$name==$version" 2> >(grep -v "is ignored" >&2)
    fi
done
had_build=$([[ -d build ]] && echo 1 || true)
"$PY" -m pip wheel -q --no-deps -w "$WORK/wheels" . 2> >(grep -v "is ignored" >&2)
[[ -n "$had_build" ]] || rm -rf build  # setuptools builds in the tree; leave it as it was

# a wheel's files go straight into site-packages; pip is not needed on the machine
mkdir -p "$WORK/site/bin"
for wheel in "$WORK"/wheels/*.whl; do
    unzip -q -o "$wheel" -d "$WORK/site"
done
"$PY" - "$WORK/site" <<'EOF'
import configparser, glob, os, sys

site = sys.argv[1]
for entry_points in glob.glob(os.path.join(site, "*.dist-info", "entry_points.txt")):
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # command names are case-sensitive
    parser.read(entry_points)
    for command, target in (parser["console_scripts"].items() if parser.has_section("console_scripts") else []):
        module, function = target.strip().split(":")
        path = os.path.join(site, "bin", command)
        with open(path, "w") as f:
            # the guard as in pip's launchers: worker processes started by spawn import this file again
            f.write(f"#!/usr/bin/env python3\nimport sys\nfrom {module} import {function}\n\n"
                    f"if __name__ == '__main__':\n    sys.exit({function}())\n")
        os.chmod(path, 0o755)
EOF
tar -C "$WORK/site" -cf - . | xz -9 -T0 > "$BUNDLE.tmp"
mv "$BUNDLE.tmp" "$BUNDLE"
echo "gpu_bundle: $(ls "$WORK"/wheels/*.whl | wc -l) packages, $(du -h "$BUNDLE" | cut -f1) in $BUNDLE for CPython $PY_VERSION"
