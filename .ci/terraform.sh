#!/usr/bin/env bash
# CI step for terraform/: fmt, offline init + validate, and checkov.
#
#   bash .ci/terraform.sh
#
# Env:
#   TF_PLUGIN_DIR   local provider mirror for `terraform init -plugin-dir` (default /opt/tf-plugins)
#   CHECKOV_VENV    venv that holds checkov (default $HOME/.cache/dfray/checkov-venv);
#                   created, and checkov pip-installed, only when missing. checkov lives
#                   in its own venv because its pins conflict with dfray's dependencies.
#   CHECKOV_VERSION checkov version to use (default pinned below: new checkov releases add
#                   checks, and CI should not turn red on its own); "latest" = unpinned.
#
# Without a terraform binary the step is skipped (exit 0) with a loud warning.
# Nothing is written into the repo: terraform runs on a copy in a temp dir.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tf_src="$repo_root/terraform"
start=$SECONDS

if ! command -v terraform >/dev/null 2>&1; then
  echo "################################################################################" >&2
  echo "WARNING: terraform not found — SKIPPING terraform fmt/validate/checkov" >&2
  echo "################################################################################" >&2
  exit 0
fi

TF_PLUGIN_DIR="${TF_PLUGIN_DIR:-/opt/tf-plugins}"
CHECKOV_VENV="${CHECKOV_VENV:-$HOME/.cache/dfray/checkov-venv}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"

if [[ ! -d "$TF_PLUGIN_DIR" ]]; then
  echo "ERROR: TF_PLUGIN_DIR=$TF_PLUGIN_DIR does not exist; it must hold a provider mirror" >&2
  echo "       (registry.terraform.io/hashicorp/aws/<version>/linux_amd64/...)." >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/dfray-terraform.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Copy the sources only (no local .terraform / state / tfvars with real values).
cp -R "$tf_src" "$work/terraform"
rm -rf "$work/terraform/.terraform" "$work/terraform/.terraform.lock.hcl" \
  "$work/terraform"/*.tfstate* "$work/terraform"/*.tfvars 2>/dev/null || true

# Keep terraform quiet and offline.
export TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 TF_INPUT=0
# A TF_CLI_CONFIG_FILE that points at a missing file only produces warnings.
if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -f "$TF_CLI_CONFIG_FILE" ]]; then
  unset TF_CLI_CONFIG_FILE
fi

run() {
  echo "+ $*"
  "$@"
}

echo "== terraform $(terraform version | head -n1) (plugin dir: $TF_PLUGIN_DIR)"
(
  cd "$work/terraform"
  run terraform fmt -check -recursive -diff
  echo "+ terraform init -backend=false -input=false -plugin-dir=$TF_PLUGIN_DIR -no-color"
  if ! terraform init -backend=false -input=false -plugin-dir="$TF_PLUGIN_DIR" -no-color >"$work/init.log" 2>&1; then
    cat "$work/init.log" >&2
    exit 1
  fi
  run terraform validate -no-color
)

echo "== checkov (venv: $CHECKOV_VENV)"
have_checkov=""
if [[ -x "$CHECKOV_VENV/bin/checkov" ]]; then
  have_checkov="$("$CHECKOV_VENV/bin/checkov" --version 2>/dev/null || true)"
fi
if [[ -z "$have_checkov" || ( "$CHECKOV_VERSION" != "latest" && "$have_checkov" != "$CHECKOV_VERSION" ) ]]; then
  if [[ "$CHECKOV_VERSION" == "latest" ]]; then req="checkov"; else req="checkov==$CHECKOV_VERSION"; fi
  python_bin="$(command -v python3 || command -v python)"
  mkdir -p "$(dirname "$CHECKOV_VENV")"
  [[ -x "$CHECKOV_VENV/bin/pip" ]] || run "$python_bin" -m venv "$CHECKOV_VENV"
  echo "+ $CHECKOV_VENV/bin/pip install $req"
  if ! "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "$req" >"$work/pip.log" 2>&1; then
    cat "$work/pip.log" >&2
    exit 1
  fi
fi
echo "checkov $("$CHECKOV_VENV/bin/checkov" --version)"
# BC_SKIP_MAPPING / --skip-download: no calls to the Prisma Cloud API (CI is offline).
(
  cd "$work"
  export BC_SKIP_MAPPING=TRUE
  run "$CHECKOV_VENV/bin/checkov" -d terraform --framework terraform --compact --quiet --skip-download
)

echo "== terraform checks passed in $((SECONDS - start))s"
