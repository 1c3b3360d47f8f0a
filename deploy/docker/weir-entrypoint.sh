#!/bin/sh
# Entrypoint of Weir's container image (installed as /usr/local/bin/weir-entrypoint, run by tini):
#
#   jobmanager [ARGS...]    exec weir-jobmanager ARGS...
#   taskmanager [ARGS...]   exec weir-taskmanager ARGS...
#   weir|cli [ARGS...]      exec weir ARGS...   (the CLI)
#   help|--help|-h|(none)   print the usage and exit 0
#   anything else           exec it as a command (e.g. `sh`)
#
# Always exec, so that the Weir process replaces this shell and tini's SIGTERM reaches it directly.
set -eu

usage() {
  echo "usage: (jobmanager|taskmanager) [--config FILE] [FLAGS...] | (weir|cli) VERB [ARGS...] | COMMAND [ARGS...]; '<component> --help' lists a component's flags"
}

if [ "$#" -eq 0 ]; then
  usage
  exit 0
fi

case "$1" in
  jobmanager)
    shift
    exec weir-jobmanager "$@"
    ;;
  taskmanager)
    shift
    exec weir-taskmanager "$@"
    ;;
  weir | cli)
    shift
    exec weir "$@"
    ;;
  help | --help | -h)
    usage
    exit 0
    ;;
  *)
    exec "$@"
    ;;
esac
