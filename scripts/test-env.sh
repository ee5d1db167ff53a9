# Sourced by scripts/test.sh (and tests/test_test_env.py).
# The tests run on services of their own, apart from the demo's (`ioc up`, `ioc services
# up`): their own state directory and ports, so a running demo is never in their way and
# the tests' stations and alerts never reach the demo's wall. Unless the tests' Apache Kafka
# is still running (kept with IOC_TEST_KEEP_SERVICES=1), its log directory is emptied
# first: every run starts on empty topics, whatever an earlier run on this machine left.
export IOC_STATE_DIR="${IOC_STATE_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/ioc/test-state}"
export IOC_BROKER_PORT="${IOC_BROKER_PORT:-9192}"
export IOC_DB_PORT="${IOC_DB_PORT:-25432}"
export IOC_MQTT_PORT="${IOC_MQTT_PORT:-1983}"
.venv/bin/python -c 'import shutil; from ioc.services import apache_kafka as k; from ioc.settings import ServiceSettings as S; s = S(); k.running(s) or shutil.rmtree(k.work_dir(s), ignore_errors=True)'
