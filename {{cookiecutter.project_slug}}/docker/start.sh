#!/usr/bin/env bash
# Started by the image's CMD (`bash /usr/bin/start.sh`) when YMIR runs a task, without arguments.
# The executor reads /in/env.yaml itself; exec hands it the signals (YMIR stops tasks with SIGKILL
# anyway) and its exit status is the container's.
set -euo pipefail
exec python3 -m {{ cookiecutter.package_name }} "$@"
