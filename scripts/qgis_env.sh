# Sourced by scripts/qgis_process and scripts/qgis: the environment that lets QGIS (which runs the
# system Python) load this plugin with the project's packages, with a profile of its own.
#   RLC_VENV          virtual environment whose site-packages go on PYTHONPATH (default .venv)
#   RLC_PLUGIN_DIR    folder holding an installed road_landcover_plugin (default: the checkout, dev layout)
#   RLC_QGIS_CONFIG   QGIS config folder (default build/qgis_profile), so your own profile is not touched
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RLC_VENV:-$ROOT/.venv}"
if [ -x "$VENV/bin/python" ]; then
  SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${RLC_PLUGIN_DIR:-}" ]; then
  # Development layout: the checkout's plugin folder, with core and processing_provider importable
  # from the repository root.
  RLC_PLUGIN_DIR="$ROOT/build/qgis_plugins"
  mkdir -p "$RLC_PLUGIN_DIR"
  ln -sfn "$ROOT/road_landcover_plugin" "$RLC_PLUGIN_DIR/road_landcover_plugin"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export QGIS_PLUGINPATH="$RLC_PLUGIN_DIR"
export QGIS_CUSTOM_CONFIG_PATH="${RLC_QGIS_CONFIG:-$ROOT/build/qgis_profile}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"
mkdir -p "$QGIS_CUSTOM_CONFIG_PATH" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
